package projector_test

import (
	"context"
	"testing"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/view"
)

// everything reads every relationship of the project's definitions as
// tuples.
func everything(t *testing.T, e *testenv.Env) []view.Tuple {
	t.Helper()
	var out []view.Tuple
	for _, typ := range []string{view.TypeSpace, view.TypeGroup, view.TypeLineage, view.TypeRepo, view.TypeProjector} {
		if err := e.Client.Read(context.Background(), &v1.RelationshipFilter{ResourceType: typ}, "", func(tu view.Tuple) error {
			out = append(out, tu)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// restore puts SpiceDB back to a backup: every relationship is deleted and
// the backup's are written again (what restoring a datastore from backup
// does to the view, under a running consumer).
func restore(t *testing.T, e *testenv.Env, backup []view.Tuple) {
	t.Helper()
	wipe(t, e)
	var ups []*v1.RelationshipUpdate
	for _, tu := range backup {
		ups = append(ups, &v1.RelationshipUpdate{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: e.Client.ToV1(tu)})
	}
	if _, err := e.Client.API().WriteRelationships(context.Background(), &v1.WriteRelationshipsRequest{Updates: ups}); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreFromBackupIsNoticed: SpiceDB is restored from a backup taken a
// few commits ago, under a running consumer. The view and the stored cursor
// go back together (the backup is consistent), so the commits after the
// backup are missing from SpiceDB. The consumer must notice that the stored
// cursor is not the one it wrote, and replay from the restored cursor, so
// that the view ends as the oracle says.
func TestRestoreFromBackupIsNoticed(t *testing.T) {
	e := testenv.New(t)
	alice, bob, carol := account(t, e, "alice"), account(t, e, "bob"), account(t, e, "carol")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	backup := everything(t, e)
	// Lost by the restore: a grant and a group.
	commit(t, e, alice, testenv.Relation("create", "e", "space", alice+"/s", "editor", "acct", carol, ""))
	commit(t, e, bob, testenv.Group("create", "g"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	restore(t, e, backup)
	commit(t, e, carol, testenv.Space("create", "c", false))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
}
