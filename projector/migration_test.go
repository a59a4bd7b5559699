package projector_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/view"
)

// migrateAliceToB moves alice from pds-a to pds-b (import, activate) but,
// like a user who never ran deactivateAccount on the old PDS (or while the
// migration is between "activate on B" and "deactivate on A"), leaves her
// old account on pds-a active.
func migrateAliceToB(t *testing.T, a, b *testenv.Env, alice string, rb *testenv.Running) {
	t.Helper()
	if _, err := b.PDS.Import(alice, a.PDS.Repo(alice).Records()); err != nil {
		t.Fatal(err)
	}
	if err := b.PDS.Activate(alice); err != nil {
		t.Fatal(err)
	}
	b.SetStatus(alice, "")
	b.WaitCaughtUp(rb)
}

// TestOldPDSRebuildDoesNotTakeAMigratedRepoBack: after alice moved to
// pds-b and revoked bob's grant there, a rebuild of pds-a (first run,
// OutdatedCursor, reset, `consumer rebuild`) lists her stale, still active
// account. Its copy is older than the stored one, so pds-a does not take
// the repo over: before mayClaim, it wrote her old records back and the
// revoked grant was live again.
func TestOldPDSRebuildDoesNotTakeAMigratedRepoBack(t *testing.T) {
	a, _, alice, bob, ra, _ := movedAndRevoked(t)
	// pds-b's takeover moved pds-a's epoch, so pds-a's run restarts once;
	// a rebuild asked of the engine of the run that ended never finishes.
	rebuilt := false
	for attempt := 0; attempt < 5 && !rebuilt; attempt++ {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		if done, err := ra.Engine().Rebuild(ctx, "test", nil); err == nil {
			select {
			case <-done:
				rebuilt = true
			case <-ctx.Done():
			}
		}
		cancel()
	}
	if !rebuilt {
		t.Fatal("pds-a's rebuild did not finish")
	}
	if a.Check("view", "space", view.ObjectID(alice, "s"), bob) {
		t.Fatalf("pds-a's rebuild took alice's migrated repo back: the grant she revoked on pds-b is live again\nalice now: %v",
			a.Under(alice))
	}
}

// TestOldPDSReplayAfterAMigrationWithdrawsNothing: the reference PDS's
// migration order (B activates, then A deactivates), when alice's last
// commit on pds-a is still in pds-a's last batch (its stored cursor trails
// the data by one batch while the stream is quiet). pds-b's claim moves
// pds-a's epoch; pds-a restarts from its stored cursor and replays alice's
// commit, and finds her still active on pds-a: at the same rev that is not
// a takeover. Before mayClaim, pds-a claimed her back (3 of 4 runs) and its
// deactivation then withdrew everything she had.
func TestOldPDSReplayAfterAMigrationWithdrawsNothing(t *testing.T) {
	a, b, alice, bob := sharedWorld(t)
	regA := prometheus.NewRegistry()
	ra := a.Start(func(c *pipeline.Config) { c.Registry = regA })
	rb := b.Start()
	a.WaitCaughtUp(ra)
	b.WaitCaughtUp(rb)
	commit(t, a, alice, testenv.Space("create", "last", false)) // her last post before moving
	a.WaitCaughtUp(ra)
	migrateAliceToB(t, a, b, alice, rb)
	time.Sleep(time.Second)
	a.SetStatus(alice, "deactivated")
	a.WaitCaughtUp(ra)
	b.WaitCaughtUp(rb)
	time.Sleep(time.Second)
	if n := metrictest.Value(t, regA, "spaces_authz_repo_claims_total"); n != 0 {
		t.Errorf("pds-a took alice's repo back %v times", n)
	}
	if !a.Check("view", "space", view.ObjectID(alice, "s"), bob) {
		t.Fatalf("after the migration alice's repo (active on pds-b) is withdrawn: %v", a.Under(alice))
	}
}

// TestUnownedRepoIsNotWithdrawnByAnOldPDS: a repo stored before ownership
// existed (no repo#source), in a SpiceDB two projectors share. alice moved
// from pds-a to pds-b; pds-a keeps her account, deactivated (the reference
// PDS does). pds-a's rebuild lists her (listRepos lists deactivated repos)
// and getRepo says "deactivated": like "no such repo", that is not the
// owner's word on a repo with no owner recorded. Before, pds-a withdrew
// her live data and claimed the repo.
func TestUnownedRepoIsNotWithdrawnByAnOldPDS(t *testing.T) {
	a, b, alice, bob := sharedWorld(t)
	ra, rb := a.Start(), b.Start()
	a.WaitCaughtUp(ra)
	b.WaitCaughtUp(rb)
	migrateAliceToB(t, a, b, alice, rb)
	a.SetStatus(alice, "deactivated")
	a.WaitCaughtUp(ra)
	b.WaitCaughtUp(rb)
	ra, _ = restartWithoutOwners(t, a, b, ra, rb)
	if !a.Check("view", "space", view.ObjectID(alice, "s"), bob) {
		t.Fatal("setup: bob can't view alice's space")
	}
	rebuildAll(t, ra, "pds-a")
	if !a.Check("view", "space", view.ObjectID(alice, "s"), bob) {
		t.Fatalf("pds-a's rebuild withdrew alice's repo, which pds-b serves as active:\n%v", a.Under(alice))
	}
}

// TestFailedResyncOfAStrangerStoresNothing: a resync an admin asked for,
// of a DID the view never held, writes nothing when getRepo fails for it
// (a 5xx, a timeout) instead of answering RepoNotFound. Before, the
// stranger was marked desynchronized (and so owned), and its retry, now
// "known", stored status:deleted: permanent state for a DID that never
// existed here (issue 12, item 3, by another road).
func TestFailedResyncOfAStrangerStoresNothing(t *testing.T) {
	e := testenv.New(t)
	alice := account(t, e, "alice")
	stranger := "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
	var calls atomic.Int32
	e.PDS.SetRepoHook(func(did string) error {
		if did == stranger && calls.Add(1) == 1 {
			return errors.New("upstream timeout")
		}
		return nil
	})
	r := e.Start(func(c *pipeline.Config) { c.Engine.ResyncAttempts = 1 })
	commit(t, e, alice, testenv.Space("create", "s", false))
	e.WaitCaughtUp(r)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := r.Resync(ctx, []string{stranger})
	t.Logf("admin resync returned %v after %d getRepo calls", err, calls.Load())
	time.Sleep(500 * time.Millisecond)
	if got := e.Under(stranger); len(got) != 0 {
		t.Fatalf("a DID the PDS does not host has stored state: %v", got)
	}
}

// TestOneTooLargeRepoDoesNotHoldReadiness: one user whose repo is over
// --max-repo-bytes (a lasting condition: retried every 5 minutes, refused
// every time) stays desynchronized, but does not keep a first run's (or an
// OutdatedCursor / reset rebuild's) rebuild "incomplete" and /readyz 503
// while every other repo is projected and the stream goes on. Before, it
// did, for as long as the process lived.
func TestOneTooLargeRepoDoesNotHoldReadiness(t *testing.T) {
	e := testenv.New(t)
	alice, mallory := account(t, e, "alice"), account(t, e, "mallory")
	commit(t, e, alice, testenv.Space("create", "s", false))
	for i := range 40 {
		commit(t, e, mallory, testenv.Space("create", "pad"+string(rune('a'+i%26))+string(rune('a'+i/26)), false))
	}
	r := e.StartFirstRun(func(c *pipeline.Config) { c.Stream.MaxRepoBytes = 6000 })
	waitFor(t, "the rebuild's resyncs", func() bool { return r.Engine() != nil && r.Engine().Status().Desynchronized == 1 })
	commit(t, e, alice, testenv.Space("create", "t", false))
	e.WaitCaughtUp(r)
	time.Sleep(3 * time.Second)
	s := r.Snapshot()
	t.Logf("ready=%v reason=%q desync=%v", s.Ready(), s.NotReadyReason(), s.Engine.DesyncDIDs)
	if !s.Ready() {
		t.Fatalf("one repo over the size limit keeps the daemon unready: %s", s.NotReadyReason())
	}
}

// TestAdminResyncSurvivesARestart: an admin resync in flight when the run
// restarts (here: another source moved this one's ownership epoch, as a
// takeover does) is asked again of the next run, not lost. Before, the
// request waited on the ended run until its timeout (a 503 for the admin
// API, a hang for reconcile --fix).
func TestAdminResyncSurvivesARestart(t *testing.T) {
	e := testenv.New(t)
	alice := account(t, e, "alice")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "s", false))
	e.WaitCaughtUp(r)
	release := make(chan struct{})
	var held atomic.Bool
	e.PDS.SetRepoHook(func(string) error {
		if !held.Swap(true) {
			<-release // the first getRepo waits until the run has restarted
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Resync(ctx, []string{alice}) }()
	waitFor(t, "the resync's getRepo", held.Load)
	st, err := e.Client.ReadProjector(t.Context(), "default")
	if err != nil {
		t.Fatal(err)
	}
	restarts := r.Snapshot().Restarts
	moveEpoch(t, e, "default", st.Epoch)
	commit(t, e, alice, testenv.Space("create", "t", false)) // a write that fails on the moved epoch
	waitFor(t, "the run's restart", func() bool { return r.Snapshot().Restarts > restarts })
	close(release)
	if err := <-errc; err != nil {
		t.Fatalf("the admin resync: %v", err)
	}
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
}

// moveEpoch moves a source's ownership epoch from n to n+1, as another
// source's takeover does.
func moveEpoch(t *testing.T, e *testenv.Env, source string, n int64) {
	t.Helper()
	_, err := e.Client.API().WriteRelationships(t.Context(), &v1.WriteRelationshipsRequest{Updates: []*v1.RelationshipUpdate{
		{Operation: v1.RelationshipUpdate_OPERATION_DELETE, Relationship: e.Client.ToV1(view.EpochTuple(source, n))},
		{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: e.Client.ToV1(view.EpochTuple(source, n+1))},
	}})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUnownedMigratedRepoIsNotTakenBackByAnOldPDSRebuild: like
// TestOldPDSRebuildDoesNotTakeAMigratedRepoBack, but the repo has no owner
// recorded (stored before ownership, in a SpiceDB two projectors share).
// The old PDS still serves alice's stale copy as active; its rebuild (or
// its periodic reconcile) must not write that copy over the newer one.
// Before, the "newer copy" rule held for claims only, and the grant alice
// revoked on pds-b was live again.
func TestUnownedMigratedRepoIsNotTakenBackByAnOldPDSRebuild(t *testing.T) {
	a, b, alice, bob, ra, rb := movedAndRevoked(t)
	ra, _ = restartWithoutOwners(t, a, b, ra, rb)
	rebuildAll(t, ra, "pds-a")
	if a.Check("view", "space", view.ObjectID(alice, "s"), bob) {
		t.Fatalf("pds-a's rebuild took alice's unowned migrated repo back with its stale copy: the grant she revoked on pds-b is live again\nalice now: %v",
			a.Under(alice))
	}
}

// TestTakedownOfAnUnownedRepoApplies: a repo stored before ownership, in
// a SpiceDB two projectors share, that was never migrated: alice lives on
// pds-a only, and pds-a takes her down. Its own stream's #account event
// withdraws her data (and rebuilds of both projectors change nothing of
// that). For a while the event was ignored for unowned repos, and her
// grants stayed live for good.
func TestTakedownOfAnUnownedRepoApplies(t *testing.T) {
	a, b, alice, bob := sharedWorld(t)
	ra, rb := a.Start(), b.Start()
	a.WaitCaughtUp(ra)
	b.WaitCaughtUp(rb)
	if err := ra.Stop(); err != nil {
		t.Fatal(err)
	}
	stripOwners(t, a)
	ra = a.Start()
	a.WaitCaughtUp(ra)
	a.SetStatus(alice, "takendown")
	a.WaitCaughtUp(ra)
	rebuildAll(t, ra, "pds-a")
	rebuildAll(t, rb, "pds-b")
	time.Sleep(500 * time.Millisecond)
	if a.Check("view", "space", view.ObjectID(alice, "s"), bob) {
		t.Fatalf("alice is taken down on her only PDS, both projectors rebuilt, and her grants are still live:\n%v",
			a.Under(alice))
	}
}

// movedAndRevoked runs both projectors of a shared world, moves alice to
// pds-b (her account on pds-a stays active), and has her revoke bob's
// viewer grant there.
func movedAndRevoked(t *testing.T) (a, b *testenv.Env, alice, bob string, ra, rb *testenv.Running) {
	t.Helper()
	a, b, alice, bob = sharedWorld(t)
	ra, rb = a.Start(), b.Start()
	a.WaitCaughtUp(ra)
	b.WaitCaughtUp(rb)
	migrateAliceToB(t, a, b, alice, rb)
	commit(t, b, alice, testenv.Delete(relC, "v"), testenv.Delete(relC, "m"))
	b.WaitCaughtUp(rb)
	if a.Check("view", "space", view.ObjectID(alice, "s"), bob) {
		t.Fatal("setup: bob still views alice's space after the revocation on pds-b")
	}
	return a, b, alice, bob, ra, rb
}

// restartWithoutOwners stops both projectors, deletes every repo's owner
// (as the version before ownership stored repos) and starts them again.
func restartWithoutOwners(t *testing.T, a, b *testenv.Env, ra, rb *testenv.Running) (*testenv.Running, *testenv.Running) {
	t.Helper()
	if err := ra.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := rb.Stop(); err != nil {
		t.Fatal(err)
	}
	stripOwners(t, a)
	ra, rb = a.Start(), b.Start()
	a.WaitCaughtUp(ra)
	b.WaitCaughtUp(rb)
	return ra, rb
}
