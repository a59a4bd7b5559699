package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/spaces-authz/spaces-authz/deploy"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// consumerCmd runs a one-shot consumer command against e and returns its
// combined output and exit code.
func consumerCmd(t *testing.T, bin string, e *testenv.Env, args ...string) (string, int) {
	t.Helper()
	conn := []string{"--spicedb-endpoint", e.SDB.Addr, "--spicedb-insecure", "--log-format", "text", "--log-level", "warn"}
	if args[0] == "rebuild" {
		conn = append(conn, "--pds-url", e.PDS.URL(), "--http-addr", "127.0.0.1:0", "--takeover")
	}
	n := 1
	if args[0] == "schema" {
		n = 2
	}
	full := append(append(append([]string{}, args[:n]...), conn...), args[n:]...)
	cmd := exec.CommandContext(context.Background(), bin, full...)
	cmd.Env = append(os.Environ(), "CONSUMER_SPICEDB_TOKEN="+e.Token)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", args, err)
	}
	return string(out), 0
}

// TestUpgradeFromUnprefixedNames walks the upgrade of DESIGN §3 with the
// binary, as an operator would, in a SpiceDB another application shares:
// a deployment of the bare names (what versions before the prefix wrote),
// `schema apply` of the prefixed names next to them, a rebuild into them,
// and `schema remove-unprefixed`, which refuses while the view is not
// rebuilt and while the other application still uses an old definition.
// The other application's definitions and answers survive every step.
func TestUpgradeFromUnprefixedNames(t *testing.T) {
	t.Parallel()
	bin := buildConsumer(t)
	e := testenv.New(t)
	ctx := context.Background()
	legacyCfg := e.SpiceConfig()
	legacyCfg.Unprefixed = true
	legacy, err := spice.Dial(legacyCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer legacy.Close()
	// The old deployment: its schema replaced everything, and the billing
	// application granted to its accounts.
	billingOld := "\ndefinition billing_doc {\n  relation reader: acct\n  permission read = reader\n}\n"
	if err := legacy.WriteSchema(ctx, deploy.Schema+billingOld); err != nil {
		t.Fatal(err)
	}
	alice, err := e.PDS.CreateAccount("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := e.PDS.CreateAccount("bob")
	if err != nil {
		t.Fatal(err)
	}
	a := alice.DID()
	if _, _, err := e.PDS.Commit(a, testenv.Space("create", "s", false),
		testenv.Relation("create", "v", "space", a+"/s", "viewer", "acct", bob.DID(), "")); err != nil {
		t.Fatal(err)
	}
	out, code := consumerCmd(t, bin, e, "rebuild", "--schema-prefix=", "--exit-when-done")
	if code != 0 {
		t.Fatalf("legacy rebuild exit %d:\n%s", code, out)
	}
	billingRel := func(subjType string) *v1.Relationship {
		return &v1.Relationship{Resource: &v1.ObjectReference{ObjectType: "billing_doc", ObjectId: "inv1"}, Relation: "reader",
			Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: subjType, ObjectId: view.EncodeDID(bob.DID())}}}
	}
	writeBilling := func(op v1.RelationshipUpdate_Operation, subjType string) {
		t.Helper()
		if _, err := legacy.API().WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: []*v1.RelationshipUpdate{
			{Operation: op, Relationship: billingRel(subjType)}}}); err != nil {
			t.Fatal(err)
		}
	}
	writeBilling(v1.RelationshipUpdate_OPERATION_TOUCH, "acct")
	checkLegacy := func(typ, perm, id, subjType string) bool {
		t.Helper()
		resp, err := legacy.API().CheckPermission(ctx, &v1.CheckPermissionRequest{Consistency: spice.Consistency(""),
			Resource: &v1.ObjectReference{ObjectType: typ, ObjectId: id}, Permission: perm,
			Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: subjType, ObjectId: view.EncodeDID(bob.DID())}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION
	}
	if !checkLegacy("space", "view", view.ObjectID(a, "s"), "acct") || !checkLegacy("billing_doc", "read", "inv1", "acct") {
		t.Fatal("the legacy deployment does not answer")
	}

	// 1. The new version's schema goes next to the old one.
	out, code = consumerCmd(t, bin, e, "schema", "apply", "--dry-run")
	if code != 0 || !strings.Contains(out, "+ spaces_authz/space (new)") || !strings.Contains(out, "dry run: nothing written") ||
		!strings.Contains(out, "definition billing_doc") {
		t.Fatalf("schema apply --dry-run exit %d:\n%s", code, out)
	}
	if err := e.Client.CheckSchema(ctx); err == nil {
		t.Fatal("--dry-run wrote the schema")
	}
	out, code = consumerCmd(t, bin, e, "schema", "apply")
	if code != 0 || !strings.Contains(out, "schema written") {
		t.Fatalf("schema apply exit %d:\n%s", code, out)
	}
	// 2. The old view can't go before the new one is built.
	out, code = consumerCmd(t, bin, e, "schema", "remove-unprefixed")
	if code != 1 || !strings.Contains(out, "have not rebuilt their view under spaces_authz/ yet") {
		t.Fatalf("remove-unprefixed before the rebuild: exit %d:\n%s", code, out)
	}
	out, code = consumerCmd(t, bin, e, "rebuild", "--exit-when-done")
	if code != 0 {
		t.Fatalf("rebuild exit %d:\n%s", code, out)
	}
	e.AssertMatchesOracle()
	// 3. Nor while the billing application still grants to the old acct.
	out, code = consumerCmd(t, bin, e, "schema", "remove-unprefixed")
	if code != 1 || !strings.Contains(out, "definition billing_doc refers to acct") {
		t.Fatalf("remove-unprefixed while billing uses acct: exit %d:\n%s", code, out)
	}
	// The billing application moves to the new names.
	writeBilling(v1.RelationshipUpdate_OPERATION_DELETE, "acct")
	cur, err := e.Client.ReadSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.Replace(cur, "relation reader: acct", "relation reader: spaces_authz/acct", 1)
	if moved == cur {
		t.Fatalf("billing_doc not found in:\n%s", cur)
	}
	if err := e.Client.WriteSchema(ctx, moved); err != nil {
		t.Fatal(err)
	}
	writeBilling(v1.RelationshipUpdate_OPERATION_TOUCH, "spaces_authz/acct")
	// 4. Now the old view goes.
	out, code = consumerCmd(t, bin, e, "schema", "remove-unprefixed", "--dry-run")
	if code != 0 || !strings.Contains(out, "dry run: nothing removed") {
		t.Fatalf("remove-unprefixed --dry-run exit %d:\n%s", code, out)
	}
	out, code = consumerCmd(t, bin, e, "schema", "remove-unprefixed")
	if code != 0 || !strings.Contains(out, "removed ") {
		t.Fatalf("remove-unprefixed exit %d:\n%s", code, out)
	}
	t.Log(strings.TrimSpace(out))
	after, err := e.Client.ReadSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	items, _, err := spice.ParseSchema(after)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range items {
		names = append(names, it.Name)
		if !strings.HasPrefix(it.Name, "spaces_authz/") && it.Name != "billing_doc" {
			t.Errorf("%s %s is left", it.Kind, it.Name)
		}
	}
	if !strings.Contains(after, "definition billing_doc") {
		t.Fatalf("billing_doc is gone: %v", names)
	}
	if !checkLegacy("billing_doc", "read", "inv1", "spaces_authz/acct") {
		t.Fatal("billing's check changed")
	}
	e.AssertMatchesOracle()
	// A re-apply is a no-op, and a second removal has nothing to do.
	out, code = consumerCmd(t, bin, e, "schema", "apply")
	if code != 0 || !strings.Contains(out, "schema up to date") {
		t.Fatalf("re-apply exit %d:\n%s", code, out)
	}
	out, code = consumerCmd(t, bin, e, "schema", "remove-unprefixed")
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Fatalf("second remove-unprefixed exit %d:\n%s", code, out)
	}
}
