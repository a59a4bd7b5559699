package projector_test

import (
	"context"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/view"
)

// everything reads every relationship of the project's definitions.
func everything(t *testing.T, e *testenv.Env) map[view.Tuple]bool {
	t.Helper()
	out := map[view.Tuple]bool{}
	for _, typ := range []string{view.TypeSpace, view.TypeGroup, view.TypeLineage, view.TypeRepo, view.TypeProjector} {
		if err := e.Client.Read(context.Background(), &v1.RelationshipFilter{ResourceType: typ}, "", func(tu view.Tuple) error {
			out[tu] = true
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// restore puts SpiceDB back to a backup in one transaction (what restoring
// its datastore does to the view, under a running consumer): what the
// backup lacks is deleted, what it holds is written.
func restore(t *testing.T, e *testenv.Env, backup map[view.Tuple]bool) {
	t.Helper()
	var ups []*v1.RelationshipUpdate
	for tu := range everything(t, e) {
		if !backup[tu] {
			ups = append(ups, &v1.RelationshipUpdate{Operation: v1.RelationshipUpdate_OPERATION_DELETE, Relationship: e.Client.ToV1(tu)})
		}
	}
	for tu := range backup {
		ups = append(ups, &v1.RelationshipUpdate{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: e.Client.ToV1(tu)})
	}
	if _, err := e.Client.API().WriteRelationships(context.Background(), &v1.WriteRelationshipsRequest{Updates: ups}); err != nil {
		t.Fatal(err)
	}
}

// waitStored waits until the stored cursor reaches the PDS's head and the
// stored heartbeat differs from the backup's: the consumer's memory is
// then past the backup on both counts.
func waitStored(t *testing.T, e *testenv.Env, backup map[view.Tuple]bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := e.Client.ReadProjector(context.Background(), "default")
		if err != nil {
			t.Fatal(err)
		}
		hb := view.HeartbeatTuple("default", st.HeartbeatMs)
		if st.Progress.Cursor >= e.PDS.Head() && !backup[hb] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored cursor %d (head %d), heartbeat %d", st.Progress.Cursor, e.PDS.Head(), st.HeartbeatMs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestoreFromBackupIsNoticed: SpiceDB is restored from a backup taken a
// few commits ago, under a running consumer. The view, the stored cursor
// and the heartbeat go back together (the backup is consistent), so the
// commits after the backup are missing from SpiceDB. The consumer must
// notice that the stored progress is not what it wrote, and replay from
// the restored cursor, so that the view ends as the oracle says. Before,
// it went on from the cursor in its memory and the two commits stayed
// missing. (A backup whose cursor is still the one in memory, with only
// the heartbeat older, is spice's TestRestoredProgressIsNoticed.)
func TestRestoreFromBackupIsNoticed(t *testing.T) {
	e := testenv.New(t)
	alice, bob, carol := account(t, e, "alice"), account(t, e, "bob"), account(t, e, "carol")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	waitStored(t, e, nil)
	backup := everything(t, e)
	// Lost by the restore: a grant and a group.
	commit(t, e, alice, testenv.Relation("create", "e", "space", alice+"/s", "editor", "acct", carol, ""))
	commit(t, e, bob, testenv.Group("create", "g"))
	e.WaitCaughtUp(r)
	waitStored(t, e, backup)
	e.AssertMatchesOracle()
	restore(t, e, backup)
	commit(t, e, carol, testenv.Space("create", "c", false))
	// The restart replays from the restored cursor: wait for the view,
	// not only for the watermark of the run that noticed.
	deadline := time.Now().Add(20 * time.Second)
	for {
		e.WaitCaughtUp(r)
		if d, _ := e.Expected(); len(d) == len(e.Data()) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.AssertMatchesOracle()
	if r.Snapshot().Restarts == 0 {
		t.Fatal("the consumer did not restart its run after the restore")
	}
}
