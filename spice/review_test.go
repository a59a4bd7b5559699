package spice_test

// Hostile review of the schema prefix and the merging schema apply: each
// test reproduces a bug (it fails on the reviewed commit).

import (
	"context"
	"errors"
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
	after, _ := c.ReadSchema(ctx)
	if !errors.Is(err, spice.ErrSchemaConflict) {
		t.Errorf("err = %v, want ErrSchemaConflict naming wiki/page's arrow to spaces_authz/space#view", err)
	}
	if after != before {
		t.Errorf("the apply wrote a schema that breaks wiki/page (%d bytes)", len(after))
	}
}
