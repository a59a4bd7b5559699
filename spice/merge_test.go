package spice_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/spaces-authz/spaces-authz/deploy"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// billing is another application's schema in the same SpiceDB: a
// definition with relationships, one with none yet, a caveat, and a relation
// that grants to the project's accounts and groups (so that it depends on
// the project's definitions).
const billing = `
/** a billing user */
definition billing/user {}

caveat billing/small_amount(amount int) {
  amount < 100
}

definition billing_doc {
  relation owner: billing/user
  relation approver: billing/user with billing/small_amount
  relation reader: spaces_authz/acct | spaces_authz/group#member
  permission read = owner + reader
}

// no relationships yet: an application that has just deployed
definition billing_empty {
  relation owner: billing/user
}
`

// otherItems are the schema's items outside the project's namespace.
func otherItems(t *testing.T, schema string) map[string]string {
	t.Helper()
	items, _, err := spice.ParseSchema(schema)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, it := range items {
		if !strings.HasPrefix(it.Name, spice.DefaultPrefix+"/") {
			out[it.Kind+" "+it.Name] = it.Text
		}
	}
	return out
}

func billingCheck(t *testing.T, c *spice.Client, doc, perm, subjType, subj, subjRel string) bool {
	t.Helper()
	resp, err := c.API().CheckPermission(context.Background(), &v1.CheckPermissionRequest{
		Consistency: spice.Consistency(""),
		Resource:    &v1.ObjectReference{ObjectType: "billing_doc", ObjectId: doc}, Permission: perm,
		Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: subjType, ObjectId: subj},
			OptionalRelation: subjRel},
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION
}

// TestApplySchemaKeepsOtherApplications: in a SpiceDB another application
// uses too, applying the project's schema keeps that application's
// definitions, caveat and relationships exactly, a re-apply writes nothing,
// and its permission checks answer the same. Before the prefix and the
// merge, `schema apply` replaced the whole schema and SpiceDB refused it
// ("cannot delete object definition billing_doc").
func TestApplySchemaKeepsOtherApplications(t *testing.T) {
	t.Parallel()
	e := testenv.New(t) // the project's schema, applied
	c := e.Client
	ctx := context.Background()
	cur, err := c.ReadSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteSchema(ctx, cur+billing); err != nil {
		t.Fatal(err)
	}
	alice := view.EncodeDID("did:plc:alice")
	group := view.ObjectID("did:plc:alice", "friends")
	ns := c.Namespace()
	_, err = c.API().WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: []*v1.RelationshipUpdate{
		{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: &v1.Relationship{
			Resource: &v1.ObjectReference{ObjectType: "billing_doc", ObjectId: "inv1"}, Relation: "owner",
			Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: "billing/user", ObjectId: "u1"}}}},
		{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: &v1.Relationship{
			Resource: &v1.ObjectReference{ObjectType: "billing_doc", ObjectId: "inv1"}, Relation: "reader",
			Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: ns.Type(view.TypeGroup), ObjectId: group},
				OptionalRelation: "member"}}},
		{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: c.ToV1(view.Tuple{ResourceType: view.TypeGroup,
			ResourceID: group, Relation: "direct_member", SubjectType: view.TypeAcct, SubjectID: alice})},
	}})
	if err != nil {
		t.Fatal(err)
	}
	type answer struct{ u1Read, aliceRead, u2Read bool }
	ask := func() answer {
		return answer{
			billingCheck(t, c, "inv1", "read", "billing/user", "u1", ""),
			billingCheck(t, c, "inv1", "read", ns.Type(view.TypeAcct), alice, ""),
			billingCheck(t, c, "inv1", "read", "billing/user", "u2", ""),
		}
	}
	before := ask()
	if before != (answer{true, true, false}) {
		t.Fatalf("billing checks before apply: %+v", before)
	}
	schemaBefore, err := c.ReadSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	others := otherItems(t, schemaBefore)
	if len(others) != 4 {
		t.Fatalf("want billing's 4 items in SpiceDB's schema, got %d:\n%s", len(others), schemaBefore)
	}

	// A re-apply of the same version changes nothing.
	plan, err := c.ApplySchema(ctx, deploy.Schema)
	if err != nil {
		t.Fatalf("re-apply: %v", err)
	}
	if len(plan.Changes) != 0 {
		t.Fatalf("a re-apply planned changes:\n%s", plan.Diff())
	}
	if len(plan.Kept) != 4 {
		t.Fatalf("kept %v, want billing's 4 items", plan.Kept)
	}
	if s, _ := c.ReadSchema(ctx); s != schemaBefore {
		t.Fatalf("a re-apply changed SpiceDB's schema:\n--- before\n%s\n--- after\n%s", schemaBefore, s)
	}

	// A new version that adds a relation changes only its definition.
	next := strings.Replace(deploy.Schema, "  relation parent: space\n", "  relation parent: space\n  relation auditor: acct\n", 1)
	if next == deploy.Schema {
		t.Fatal("could not edit the schema")
	}
	plan, err = c.ApplySchema(ctx, next)
	if err != nil {
		t.Fatalf("apply the next version: %v", err)
	}
	if len(plan.Changes) != 1 || plan.Changes[0].Kind != "change" || plan.Changes[0].Name != ns.Type(view.TypeSpace) {
		t.Fatalf("changes %+v, want one change of %s:\n%s", plan.Changes, ns.Type(view.TypeSpace), plan.Diff())
	}
	if d := plan.Diff(); !strings.Contains(d, "+ relation auditor: spaces_authz/acct") {
		t.Fatalf("diff does not show the new relation:\n%s", d)
	}
	after, err := c.ReadSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range otherItems(t, after) {
		if others[k] != v {
			t.Fatalf("%s changed:\n--- before\n%s\n--- after\n%s", k, others[k], v)
		}
	}
	if got := otherItems(t, after); len(got) != len(others) {
		t.Fatalf("other items %d, want %d", len(got), len(others))
	}
	if got := ask(); got != before {
		t.Fatalf("billing checks changed: %+v, were %+v", got, before)
	}
	if err := c.CheckSchema(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestApplySchemaRefusesToBreakAnotherApplication: a version whose schema
// drops what another application's definitions use is refused, with a
// message naming both, and nothing is written.
func TestApplySchemaRefusesToBreakAnotherApplication(t *testing.T) {
	t.Parallel()
	e := testenv.New(t)
	c := e.Client
	ctx := context.Background()
	cur, err := c.ReadSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteSchema(ctx, cur+billing); err != nil {
		t.Fatal(err)
	}
	before, _ := c.ReadSchema(ctx)
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"a relation another application uses", "  permission member = owner + direct_member\n", "",
			"definition billing_doc refers to spaces_authz/group#member, which this version does not declare"},
		{"a definition another application uses", "definition acct {}\n", "",
			"definition billing_doc refers to spaces_authz/acct, which this version does not define"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := strings.Replace(deploy.Schema, tc.from, tc.to, 1)
			if next == deploy.Schema {
				t.Fatal("could not edit the schema")
			}
			_, err := c.ApplySchema(ctx, next)
			if !errors.Is(err, spice.ErrSchemaConflict) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrSchemaConflict saying %q", err, tc.want)
			}
			if s, _ := c.ReadSchema(ctx); s != before {
				t.Fatal("a refused apply wrote the schema")
			}
		})
	}
}

// TestQualifySchema: every definition the template declares, and every
// reference to one, carries the prefix; nothing else changes.
func TestQualifySchema(t *testing.T) {
	t.Parallel()
	ns := spice.MustNamespace("acme/authz")
	got, err := spice.QualifySchema(deploy.Schema, ns)
	if err != nil {
		t.Fatal(err)
	}
	items, _, err := spice.ParseSchema(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) < 10 {
		t.Fatalf("%d items", len(items))
	}
	for _, it := range items {
		if !strings.HasPrefix(it.Name, "acme/authz/") {
			t.Errorf("%s %s is not under the prefix", it.Kind, it.Name)
		}
	}
	// Every type in a relation is qualified.
	for _, m := range regexp.MustCompile(`(?m)^\s*relation \w+: (.*)$`).FindAllStringSubmatch(got, -1) {
		for _, alt := range strings.Split(m[1], "|") {
			if !strings.HasPrefix(strings.TrimSpace(alt), "acme/authz/") {
				t.Errorf("unqualified type %q in %q", alt, m[0])
			}
		}
	}
	// Comments and permissions are untouched.
	if !strings.Contains(got, "permission view = edit + viewer + member + (parent->view & inherits)") ||
		!strings.Contains(got, "// spaces-authz SpiceDB schema.") {
		t.Fatalf("permissions or comments changed:\n%s", got)
	}
	if un, _ := spice.QualifySchema(deploy.Schema, spice.Namespace{}); un != deploy.Schema {
		t.Fatal("the unprefixed namespace changed the template")
	}
}

func TestValidatePrefix(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", "spaces_authz", "acme/authz", "abc"} {
		if err := spice.ValidatePrefix(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	for _, p := range []string{"ab", "Spaces", "spaces-authz", "1abc", "abc_", "abc/", "/abc", "a/bcd"} {
		if err := spice.ValidatePrefix(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

// TestParseSchemaKeepsEveryByte: the items and the tail of a schema, put
// back together, are the schema; braces inside comments and caveat strings
// do not end an item.
func TestParseSchemaKeepsEveryByte(t *testing.T) {
	t.Parallel()
	s := "use expiration\n\n// a } in a comment\ndefinition a/b {\n  relation x: a/b /* } */\n}\n\n" +
		"caveat c(s string) {\n  s == \"}{\"\n}\n/** trailing */\n"
	items, tail, err := spice.ParseSchema(s)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, it := range items {
		b.WriteString(it.Text)
	}
	if b.String()+tail != s {
		t.Fatalf("items do not add up to the schema:\n%q\n%q", b.String()+tail, s)
	}
	if len(items) != 3 || items[1].Name != "a/b" || items[2].Kind != "caveat" || items[0].Kind != "use" {
		t.Fatalf("items %+v", items)
	}
	if _, _, err := spice.ParseSchema("definition x {"); err == nil {
		t.Fatal("an unbalanced schema parsed")
	}
	if _, _, err := spice.ParseSchema("relation x: y"); err == nil {
		t.Fatal("a stray statement parsed")
	}
}
