package projector_test

import (
	"slices"
	"testing"

	"github.com/spaces-authz/spaces-authz/internal/fakepds"
	. "github.com/spaces-authz/spaces-authz/internal/testenv" //nolint:revive // test DSL
	"github.com/spaces-authz/spaces-authz/projector"
)

const (
	spaceC = "com.atproto.space.space"
	groupC = "com.atproto.space.group"
	relC   = "com.atproto.space.relation"
)

func commit(t *testing.T, e *Env, did string, w ...fakepds.Write) {
	t.Helper()
	if _, _, err := e.PDS.Commit(did, w...); err != nil {
		t.Fatal(err)
	}
}

func account(t *testing.T, e *Env, name string) string {
	t.Helper()
	r, err := e.PDS.CreateAccount(name)
	if err != nil {
		t.Fatal(err)
	}
	return r.DID()
}

func has(list []string, s string) bool { return slices.Contains(list, s) }

func TestCreateUpdateMovesGrantDelete(t *testing.T) {
	e := New(t)
	alice, bob, carol := account(t, e, "alice"), account(t, e, "bob"), account(t, e, "carol")
	r := e.Start()
	commit(t, e, alice, Space("create", "paid", false), Relation("create", "g1", "space", alice+"/paid", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	paid := projector.ObjectID(alice, "paid")
	if !e.Check("view", "space", paid, bob) || e.Check("view", "space", paid, carol) {
		t.Fatal("bob should view, carol should not")
	}
	// The update moves the grant from bob to carol.
	commit(t, e, alice, Relation("update", "g1", "space", alice+"/paid", "viewer", "acct", carol, ""))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if e.Check("view", "space", paid, bob) || !e.Check("view", "space", paid, carol) {
		t.Fatal("after the update carol should view and bob not")
	}
	commit(t, e, alice, Delete(relC, "g1"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if e.Check("view", "space", paid, carol) {
		t.Fatal("carol still views after the grant was deleted")
	}
	if !e.Check("administer", "space", paid, alice) {
		t.Fatal("the owner lost administer")
	}
}

func TestTwoRecordsOneTuple(t *testing.T) {
	e := New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	grant := "space:" + projector.ObjectID(alice, "s") + "#viewer@acct:" + projector.EncodeDID(bob)
	commit(t, e, alice, Space("create", "s", false),
		Relation("create", "a", "space", alice+"/s", "viewer", "acct", bob, ""),
		Relation("create", "b", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	commit(t, e, alice, Delete(relC, "a"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if !has(e.Data(), grant) {
		t.Fatal("deleting one of two producers removed the tuple")
	}
	commit(t, e, alice, Relation("create", "a", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	// Both producers deleted in one commit (one batch).
	commit(t, e, alice, Delete(relC, "a"), Delete(relC, "b"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if has(e.Data(), grant) {
		t.Fatal("the tuple survived its last producer")
	}
}

func TestUpdateToInvalidValueRemovesOldGrant(t *testing.T) {
	e := New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	commit(t, e, alice, Space("create", "s", false), Relation("create", "g", "space", alice+"/s", "editor", "acct", bob, ""))
	e.WaitCaughtUp(r)
	// editor with a wildcard is not allowed: the record is rejected and
	// what it produced before goes.
	commit(t, e, alice, Relation("update", "g", "space", alice+"/s", "editor", "acct", "*", ""))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if e.Check("edit", "space", projector.ObjectID(alice, "s"), bob) {
		t.Fatal("the old grant survived an update to an invalid value")
	}
}

func TestSpaceDeletedWhileGrantsRemain(t *testing.T) {
	e := New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	commit(t, e, alice, Space("create", "s", false), Relation("create", "g", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	commit(t, e, alice, Delete(spaceC, "s"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	data := e.Data()
	s := projector.ObjectID(alice, "s")
	if has(data, "space:"+s+"#owner@acct:"+projector.EncodeDID(alice)) || has(data, "space:"+s+"#inherits@acct:*") {
		t.Fatal("the deleted space's own tuples remain")
	}
	if !has(data, "space:"+s+"#viewer@acct:"+projector.EncodeDID(bob)) {
		t.Fatal("the grant record still exists, so its tuple must stay")
	}
}
