package projector_test

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/view"
)

// TestFirstRunRebuildsFromSnapshots: with no cursor, the consumer follows
// the stream live and builds the view from getRepo snapshots meanwhile.
func TestFirstRunRebuildsFromSnapshots(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	commit(t, e, bob, testenv.Group("create", "g"), testenv.Relation("create", "m", "group", bob+"/g", "direct_member", "acct", alice, ""))
	commit(t, e, alice, testenv.Delete(relC, "v"), testenv.Relation("create", "w", "space", alice+"/s", "editor", "acct", bob, ""))
	reg := prometheus.NewRegistry()
	r := e.StartFirstRun(func(c *pipeline.Config) { c.Registry = reg })
	e.WaitRebuilt(r, 1)
	e.AssertMatchesOracle()
	// The stream goes on from the live connection.
	commit(t, e, bob, testenv.Delete(groupC, "g"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if got := metrictest.Value(t, reg, "spaces_authz_resyncs_total", "trigger", "rebuild"); got != 2 {
		t.Fatalf("rebuild resyncs = %v, want 2 (one per repo)", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := e.Client.ReadProjector(t.Context(), "default")
		if err == nil && st.Progress.Rebuild == -1 && st.Progress.Cursor >= 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the rebuild: marker %d, cursor %d (%v)", st.Progress.Rebuild, st.Progress.Cursor, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOutdatedCursorRebuilds: the PDS no longer has the events after the
// stored cursor, including deletes; the rebuild brings the view back.
func TestOutdatedCursorRebuilds(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""),
		testenv.Relation("create", "w", "space", alice+"/s", "editor", "acct", bob, ""))
	e.WaitCaughtUp(r)
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	// While the consumer is away: deletes and creates, then the PDS
	// forgets those events.
	commit(t, e, alice, testenv.Delete(relC, "v"), testenv.Space("create", "t", true))
	commit(t, e, bob, testenv.Space("create", "b", false), testenv.Relation("create", "x", "space", bob+"/b", "admin", "acct", alice, ""))
	commit(t, e, alice, testenv.Delete(relC, "w"))
	e.PDS.Trim(e.PDS.Head())
	reg := prometheus.NewRegistry()
	r2 := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	e.WaitRebuilt(r2, 1)
	commit(t, e, alice, testenv.Group("create", "late"))
	e.WaitCaughtUp(r2)
	e.AssertMatchesOracle()
	if got := metrictest.Value(t, reg, "spaces_authz_rebuilds_total"); got != 1 {
		t.Fatalf("rebuilds = %v", got)
	}
}

// TestRebuildRemovesReposNoLongerListed: a repo the view knows but the PDS
// lost is removed by a rebuild.
func TestRebuildRemovesReposNoLongerListed(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "s", false))
	commit(t, e, bob, testenv.Space("create", "b", false), testenv.Relation("create", "x", "space", bob+"/b", "viewer", "acct", alice, ""))
	e.WaitCaughtUp(r)
	e.PDS.Forget(bob)
	rebuildAll(t, r, "the projector")
	for _, rel := range append(e.Data(), e.Lineage()...) {
		if strings.Contains(rel, view.EncodeDID(bob)) {
			t.Fatalf("a forgotten repo's relationship remains: %s", rel)
		}
	}
	if !e.Check("administer", "space", view.ObjectID(alice, "s"), alice) {
		t.Fatal("the rebuild lost a listed repo")
	}
}

// TestSpiceDBResetTriggersRebuild empties SpiceDB under a running consumer
// (as a restart of a memory datastore would): it notices (its lease and
// cursor are gone) and rebuilds instead of going on from a wrong place.
func TestSpiceDBResetTriggersRebuild(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	wipe(t, e)
	commit(t, e, bob, testenv.Space("create", "b", false))
	e.WaitRebuilt(r, 1)
	commit(t, e, alice, testenv.Group("create", "g"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
}

// wipe deletes every relationship of the test's datastore (the schema stays).
func wipe(t *testing.T, e *testenv.Env) {
	t.Helper()
	for _, typ := range []string{"space", "group", "lineage", "repo", "projector"} {
		_, err := e.Client.API().DeleteRelationships(context.Background(), &v1.DeleteRelationshipsRequest{
			RelationshipFilter: e.Client.Namespace().Filter(&v1.RelationshipFilter{ResourceType: typ})})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A first run stores no cursor before its rebuild marker: if it did, a
// crash in between would leave a cursor without a marker, and the next
// start would follow the stream from there and never build what came
// before. Events arriving before the rebuild is requested are projected,
// but their batches carry no cursor.
func TestFirstRunStoresNoCursorBeforeTheRebuildMarker(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	commit(t, e, alice, testenv.Space("create", "early", false), testenv.Relation("create", "v", "space", alice+"/early", "viewer", "acct", bob, ""))
	r := e.StartFirstRun(func(c *pipeline.Config) {
		c.Hooks.BeforeRebuild = func(ctx context.Context) {
			// A live event is decided and written before the rebuild starts.
			commit(t, e, bob, testenv.Relation("create", "m", "group", bob+"/g", "direct_member", "acct", alice, ""))
			deadline := time.Now().Add(10 * time.Second)
			for len(e.Data()) == 0 {
				if time.Now().After(deadline) {
					t.Error("the live event was not written")
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // idle flushes (every 50 ms) would store a cursor
			st, err := e.Client.ReadProjector(ctx, "default")
			if err != nil {
				t.Error(err)
				return
			}
			if st.Progress.Cursor != -1 || st.Progress.Rebuild != -1 {
				t.Errorf("before the rebuild was requested: cursor %d, marker %d; want neither stored", st.Progress.Cursor, st.Progress.Rebuild)
			}
		}
	})
	e.WaitRebuilt(r, 1)
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
}

// A rebuild that finds a repo inactive stores its status under seq 0 (no
// event triggered it). That tuple must still be replaced, not left next to
// the next status: two status tuples made a later start load the wrong one
// and withdraw an active repo for good (seen in the e2e kill test).
func TestRebuildStatusOfAnInactiveRepoIsReplaced(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.SetStatus(alice, "deactivated")
	r := e.StartFirstRun()
	e.WaitRebuilt(r, 1)
	e.SetStatus(alice, "")
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	var statuses []string
	for _, rel := range e.Relationships(view.TypeRepo) {
		if strings.Contains(rel, "#status@") && strings.Contains(rel, view.RepoID(alice)) {
			statuses = append(statuses, rel)
		}
	}
	want := view.StatusTuple(alice, "active", e.PDS.Head()).String()
	if len(statuses) != 1 || statuses[0] != want {
		t.Fatalf("alice's status tuples: %v, want only %s", statuses, want)
	}
	// A restart loads the repo as active and keeps it so.
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	commit(t, e, alice, testenv.Relation("create", "w", "space", alice+"/s", "editor", "acct", bob, ""))
	r = e.Start()
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
}
