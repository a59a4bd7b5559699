package projector

import (
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/view"
)

// waitMem polls cond for up to 5 s.
func waitMem(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestMemReviewSameRevClaimThenCommitLeavesTwoRevTuples: batch.addUnit
// (7433232) records as "created by this batch" every rev TOUCHed by a unit
// that also DELETEs a rev. A same-rev claim (the migration case: the new
// PDS imported the commit the old owner stored, DESIGN §4) writes, in one
// unit, DELETE repo:alice#rev@rev:R (the old owner's tuple) ... TOUCH
// repo:alice#rev@rev:R (its own): R already exists in SpiceDB, yet it lands
// in newRevs. The commit held during the claim is decided right after it
// into the same batch: storeRev's DELETE R is then "dropped" (and with it
// the claim's own DELETE of R), so R is never deleted and the batch stores
// R and R2: two rev tuples.
//
// Interleaving: alice owned by pds-a at R; #account active on this PDS
// (claim starts; getRepo parked); #commit R->R2 (held); getRepo answers at
// R; applyResync: claimWrites (same rev, activation: taken) + releaseHeld
// (the commit, a data change) in one batch.
func TestMemReviewSameRevClaimThenCommitLeavesTwoRevTuples(t *testing.T) {
	h := aliceOwnedBy(t, "pds-a", nil)
	r := h.pds.repos[memAlice].rev

	h.pds.mu.Lock() // getRepo waits: the claim stays in flight
	h.seq++
	h.send(&firehose.Event{Seq: h.seq, Kind: firehose.KindAccount, DID: memAlice, Active: true})
	// alice's first commit on this PDS, while the claim runs: held.
	h.clock++
	r2 := syntax.NewTID(h.clock, 0).String()
	h.seq++
	ev := &firehose.Event{Seq: h.seq, Kind: firehose.KindCommit, DID: memAlice, Rev: r2, Since: r,
		Time: time.Now().UTC().Format(time.RFC3339Nano),
		Ops: []firehose.Op{{Action: firehose.ActionCreate, Collection: "com.atproto.space.relation", RKey: "g2",
			Record: grant(memAlice, "root", "editor", memBob)}}}
	h.send(ev)
	waitMem(t, "both events handed to the applier", func() bool {
		h.engine.mu.Lock()
		defer h.engine.mu.Unlock()
		return h.engine.states[memAlice].queued == 0
	})
	time.Sleep(20 * time.Millisecond) // decided (held) after dequeued
	h.pds.mu.Unlock()                 // getRepo answers at R
	waitMem(t, "alice claimed", func() bool {
		return len(h.view.matching(func(tu view.Tuple) bool {
			return tu == view.SourceTuple(memAlice, "default")
		})) == 1
	})
	// The PDS now has the commit too (for the view check).
	h.pds.mu.Lock()
	h.pds.repos[memAlice].records[relCol+"g2"] = grant(memAlice, "root", "editor", memBob)
	h.pds.repos[memAlice].rev = r2
	h.pds.mu.Unlock()
	h.assertView("after the claim and the held commit")
	revs := h.view.matching(func(tu view.Tuple) bool {
		return tu.Relation == view.RelRev && tu.ResourceID == view.RepoID(memAlice)
	})
	if len(revs) != 1 || revs[0].SubjectID != r2 {
		t.Fatalf("rev tuples after a same-rev claim and a commit in one batch: %v, want only %s (the claim's DELETE of %s was dropped with the 'superseded' one)",
			revs, r2, r)
	}
}
