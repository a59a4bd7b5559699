package spice_test

// Hostile review of the schema prefix and the merging schema apply: each
// test reproduces a bug (it fails on the reviewed commit).

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/spaces-authz/spaces-authz/deploy"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
)

// TestReviewArrowIntoOursIsAConflict: another application's permission
// walks an arrow into one of the project's permissions
// (`space->view`). A version that drops that permission must be refused
// like one that drops a relation named in a type (`group#member`); the
// reference check only sees `spaces_authz/space`, so the apply goes ahead.
func TestReviewArrowIntoOursIsAConflict(t *testing.T) {
	t.Parallel()
	e := testenv.New(t)
	c := e.Client
	ctx := context.Background()
	cur, err := c.ReadSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const other = `
definition wiki/page {
  relation space: spaces_authz/space
  permission read = space->view
}
`
	if err := c.WriteSchema(ctx, cur+other); err != nil {
		t.Fatal(err)
	}
	ns := c.Namespace()
	rel := func(rt, rid, r, st, sid string) *v1.RelationshipUpdate {
		return &v1.RelationshipUpdate{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: &v1.Relationship{
			Resource: &v1.ObjectReference{ObjectType: rt, ObjectId: rid}, Relation: r,
			Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: st, ObjectId: sid}}}}
	}
	if _, err := c.API().WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: []*v1.RelationshipUpdate{
		rel("wiki/page", "p1", "space", ns.Type("space"), "s1"),
		rel(ns.Type("space"), "s1", "viewer", ns.Type("acct"), "alice"),
	}}); err != nil {
		t.Fatal(err)
	}
	check := func() string {
		resp, err := c.API().CheckPermission(ctx, &v1.CheckPermissionRequest{Consistency: spice.Consistency(""),
			Resource: &v1.ObjectReference{ObjectType: "wiki/page", ObjectId: "p1"}, Permission: "read",
			Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: ns.Type("acct"), ObjectId: "alice"}}})
		if err != nil {
			return "error: " + err.Error()
		}
		return resp.GetPermissionship().String()
	}
	t.Logf("wiki/page:p1 read for alice before: %s", check())
	defer func() { t.Logf("wiki/page:p1 read for alice after: %s", check()) }()
	before, _ := c.ReadSchema(ctx)
	next := strings.Replace(deploy.Schema, "  permission view = edit + viewer + member + (parent->view & inherits)\n", "", 1)
	if next == deploy.Schema {
		t.Fatal("could not edit the schema")
	}
	_, err = c.ApplySchema(ctx, next)
	t.Logf("apply: %v", err)
	after, _ := c.ReadSchema(ctx)
	if !errors.Is(err, spice.ErrSchemaConflict) {
		t.Errorf("err = %v, want ErrSchemaConflict naming wiki/page's arrow to spaces_authz/space#view", err)
	}
	if after != before {
		t.Errorf("the apply wrote a schema that breaks wiki/page (%d bytes)", len(after))
	}
}

// TestReviewNestedPrefixIsNotOurs: a second deployment of the project in
// the same SpiceDB under a prefix nested in ours (spaces_authz/staging, a
// prefix ValidatePrefix accepts) has definitions spaces_authz/staging/space,
// …. Namespace.Owns takes them for the default deployment's, so its
// `schema apply` plans to remove every one of them (SpiceDB deletes them
// when they hold no relationships yet, and refuses the whole apply when
// they do).
func TestReviewNestedPrefixIsNotOurs(t *testing.T) {
	t.Parallel()
	ours, err := spice.QualifySchema(deploy.Schema, spice.MustNamespace(spice.DefaultPrefix))
	if err != nil {
		t.Fatal(err)
	}
	staging, err := spice.QualifySchema(deploy.Schema, spice.MustNamespace(spice.DefaultPrefix+"/staging"))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := spice.PlanSchema(ours+"\n"+staging, ours, spice.MustNamespace(spice.DefaultPrefix))
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Changes) != 0 {
		t.Errorf("%d changes, want none: the staging deployment's definitions are not ours:\n%s", len(plan.Changes), plan.Diff())
	}
	if ns := spice.MustNamespace(spice.DefaultPrefix); ns.Owns(spice.DefaultPrefix + "/staging/space") {
		t.Errorf("Owns(%q) = true", spice.DefaultPrefix+"/staging/space")
	}
}

// TestReviewReapplyOfARegeneratedFormIsANoOp: SpiceDB stores a permission
// in its own form: `a - b - c` comes back as `(a - b) - c`, `(a + b)` as
// `a + b`, `a -> b` as `a->b`. normalize() does not undo that, so with a
// schema file written that way every `schema apply` plans a change and
// writes the schema again, and its diff shows a change that is none.
func TestReviewReapplyOfARegeneratedFormIsANoOp(t *testing.T) {
	t.Parallel()
	e := testenv.New(t)
	c := e.Client
	ctx := context.Background()
	for _, form := range []string{
		"permission owners = owner - parent->owners - owner",
		"permission owners = (owner + parent->owners)",
		"permission owners = owner + parent -> owners",
	} {
		tmpl := strings.Replace(deploy.Schema, "permission owners = owner + parent->owners", form, 1)
		if tmpl == deploy.Schema {
			t.Fatal("could not edit the schema")
		}
		if _, err := c.ApplySchema(ctx, tmpl); err != nil {
			t.Fatal(err)
		}
		plan, err := c.ApplySchema(ctx, tmpl)
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Changes) != 0 {
			t.Errorf("%q: the re-apply planned %d change(s):\n%s", form, len(plan.Changes), plan.Diff())
		}
	}
}

// TestReviewRemoveUnprefixedLeavesAnotherApplicationsSpace: another
// application has its own bare `space` (owner, viewer, view: names the
// project's space declares too, on other types) and no definition of its
// refers to it. remove-unprefixed takes it for the project's legacy space
// (its members are a subset of ours), with no legacy projector in sight,
// and deletes it with every one of its relationships.
func TestReviewRemoveUnprefixedLeavesAnotherApplicationsSpace(t *testing.T) {
	t.Parallel()
	e := testenv.New(t) // a fresh install under the prefix: nothing to upgrade from
	c := e.Client
	ctx := context.Background()
	cur, err := c.ReadSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const other = `
definition user {}

definition space {
  relation owner: user
  relation viewer: user
  permission view = owner + viewer
}
`
	if err := c.WriteSchema(ctx, cur+other); err != nil {
		t.Fatal(err)
	}
	if _, err := c.API().WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: []*v1.RelationshipUpdate{
		{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: &v1.Relationship{
			Resource: &v1.ObjectReference{ObjectType: "space", ObjectId: "team1"}, Relation: "owner",
			Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: "user", ObjectId: "u1"}}}},
	}}); err != nil {
		t.Fatal(err)
	}
	plan, err := c.PlanRemoveLegacy(ctx, deploy.Schema)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(plan.Definitions, "space") {
		t.Errorf("remove-unprefixed would remove another application's space: plan %v (conflict %v)", plan.Definitions, plan.Conflict)
		if plan.Conflict == nil {
			n, err := c.RemoveLegacy(ctx, plan)
			t.Errorf("RemoveLegacy deleted %d of its relationships (err %v)", n, err)
		}
	}
}

// TestReviewTemplateCaveatIsQualified: a schema file (--schema-file) with a
// caveat. QualifySchema renames definitions only, so the caveat keeps its
// bare name, is not under the prefix, and the merge takes another
// application's caveat of that name for the project's and replaces it.
func TestReviewTemplateCaveatIsQualified(t *testing.T) {
	t.Parallel()
	ns := spice.MustNamespace(spice.DefaultPrefix)
	tmpl := deploy.Schema + "\ncaveat small(amount int) {\n  amount < 10\n}\n"
	ours, err := spice.QualifySchema(tmpl, ns)
	if err != nil {
		t.Fatal(err)
	}
	items, _, err := spice.ParseSchema(ours)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Kind == "caveat" && it.Name != ns.Type("small") {
			t.Errorf("the template's caveat is named %q, not under the prefix", it.Name)
		}
	}
	other := "caveat small(amount int) {\n  amount < 1000\n}\n\ndefinition billing_doc {\n  relation owner: billing_doc with small\n}\n"
	plan, err := spice.PlanSchema(other, ours, ns)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan.Schema, other) {
		t.Errorf("another application's caveat `small` was not kept:\n%s", plan.Diff())
	}
}

// TestReviewNormalizeKeepsStrings: normalize() reads `//` inside a caveat's
// string as a comment and collapses white space inside strings, so a real
// change of a caveat under the prefix compares equal and is never written.
func TestReviewNormalizeKeepsStrings(t *testing.T) {
	t.Parallel()
	ns := spice.MustNamespace(spice.DefaultPrefix)
	caveat := func(lit string) string {
		return "caveat spaces_authz/origin(url string) {\n\turl == " + lit + "\n}\n"
	}
	for _, tc := range [][2]string{
		{`"https://a.example"`, `"https://b.example"`},
		{`"a  b"`, `"a b"`},
	} {
		plan, err := spice.PlanSchema(caveat(tc[0]), caveat(tc[1]), ns)
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Changes) != 1 {
			t.Errorf("%s -> %s: %d changes, want 1", tc[0], tc[1], len(plan.Changes))
		}
	}
}

// TestReviewApplyDoesNotUndoAConcurrentWrite: another application writes
// SpiceDB's schema between `schema apply`'s read and its write. Writing
// the plan as it was made would drop that application's new definition (a
// lost update); WritePlan refuses instead.
func TestReviewApplyDoesNotUndoAConcurrentWrite(t *testing.T) {
	t.Parallel()
	e := testenv.New(t)
	c := e.Client
	ctx := context.Background()
	next := strings.Replace(deploy.Schema, "  relation parent: space\n", "  relation parent: space\n  relation auditor: acct\n", 1)
	plan, err := c.PlanApply(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := c.ReadSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteSchema(ctx, cur+"\ndefinition other_app/late {}\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.WritePlan(ctx, plan); !errors.Is(err, spice.ErrSchemaConflict) {
		t.Errorf("WritePlan after a concurrent write: err = %v, want ErrSchemaConflict", err)
	}
	if s, _ := c.ReadSchema(ctx); !strings.Contains(s, "definition other_app/late {}") {
		t.Error("the concurrent write was undone")
	}
}

// TestReviewQualifySchemaEveryRelationType: QualifySchema works line by
// line and skips a relation whose line holds a `/` (another application's
// type, a /* comment */), whose types go on to the next line, or that
// shares its line with the definition. Those keep the bare name: SpiceDB
// refuses the schema, or, while the bare definitions of an older version
// are still there, the relation silently points at them.
func TestReviewQualifySchemaEveryRelationType(t *testing.T) {
	t.Parallel()
	tmpl := "definition acct {}\n\ndefinition doc {\n" +
		"  relation aaa: acct | billing/user\n" +
		"  relation bbb: acct /* a note */\n" +
		"  relation ccc:\n    acct |\n    doc#aaa\n" +
		"  relation ddd: acct with expiration // acct\n" +
		"}\n\ndefinition one { relation rrr: acct }\n"
	want := "definition spaces_authz/acct {}\n\ndefinition spaces_authz/doc {\n" +
		"  relation aaa: spaces_authz/acct | billing/user\n" +
		"  relation bbb: spaces_authz/acct /* a note */\n" +
		"  relation ccc:\n    spaces_authz/acct |\n    spaces_authz/doc#aaa\n" +
		"  relation ddd: spaces_authz/acct with expiration // acct\n" +
		"}\n\ndefinition spaces_authz/one { relation rrr: spaces_authz/acct }\n"
	got, err := spice.QualifySchema(tmpl, spice.MustNamespace(spice.DefaultPrefix))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("QualifySchema:\n%s\nwant:\n%s", got, want)
	}
}

// TestReviewOtherApplicationMayUseOurCaveat: a kept relation `with
// spaces_authz/small` names a caveat the project's schema defines; that
// is no conflict.
func TestReviewOtherApplicationMayUseOurCaveat(t *testing.T) {
	t.Parallel()
	ns := spice.MustNamespace(spice.DefaultPrefix)
	ours, err := spice.QualifySchema(deploy.Schema+"\ncaveat small(amount int) {\n  amount < 10\n}\n", ns)
	if err != nil {
		t.Fatal(err)
	}
	other := "definition billing_doc {\n  relation owner: spaces_authz/acct with spaces_authz/small\n}\n"
	if _, err := spice.PlanSchema(other+ours, ours, ns); err != nil {
		t.Errorf("a kept relation with our caveat: %v", err)
	}
}

// TestReviewArrowFormsAreConflicts: every arrow form of a kept definition
// into a permission the new version drops is a conflict; an arrow into one
// that stays, or into another application's type, is not.
func TestReviewArrowFormsAreConflicts(t *testing.T) {
	t.Parallel()
	ns := spice.MustNamespace(spice.DefaultPrefix)
	held, err := spice.QualifySchema(deploy.Schema, ns)
	if err != nil {
		t.Fatal(err)
	}
	next, err := spice.QualifySchema(strings.Replace(deploy.Schema,
		"  permission view = edit + viewer + member + (parent->view & inherits)\n", "", 1), ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		perm     string
		conflict bool
	}{
		{"space->view", true},
		{"space -> view", true},
		{"space.any(view)", true},
		{"space.all( view )", true},
		{"space->edit", false},
		{"folder->view", false},
	} {
		other := "definition wiki/folder {\n  permission view = nil\n}\n\ndefinition wiki/page {\n" +
			"  relation space: spaces_authz/space\n  relation folder: wiki/folder\n  permission read = " + tc.perm + "\n}\n"
		_, err := spice.PlanSchema(other+held, next, ns)
		if got := errors.Is(err, spice.ErrSchemaConflict); got != tc.conflict {
			t.Errorf("%s: conflict %v, want %v (%v)", tc.perm, got, tc.conflict, err)
		}
	}
}
