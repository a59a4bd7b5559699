package projector

import (
	"slices"
	"testing"

	"github.com/spaces-authz/spaces-authz/view"
)

// TestBatchCollapsesARepoRevToOneReplacement: however many commits of a
// repo a batch holds, it deletes the stored rev once and touches the newest
// once; a rev created and superseded in the batch is never written, and a
// rev the batch did not create is still deleted.
func TestBatchCollapsesARepoRevToOneReplacement(t *testing.T) {
	const did = "did:plc:alice"
	rev := func(r string) view.Tuple { return view.RevTuple(did, r) }
	replace := func(from, to string) unit {
		return unit{{Op: view.OpDelete, Tuple: rev(from)}, {Op: view.OpTouch, Tuple: rev(to)}}
	}
	b := newBatch(1, MaxBatchUpdates)
	b.addUnit(replace("r0", "r1"))
	b.addUnit(replace("r1", "r2"))
	b.addUnit(replace("r2", "r3"))
	want := []view.Update{{Op: view.OpDelete, Tuple: rev("r0")}, {Op: view.OpTouch, Tuple: rev("r3")}}
	if got := b.updates(); !slices.Equal(got, want) {
		t.Fatalf("three commits: %v, want %v", got, want)
	}
	// Back to a rev the batch dropped (a same-rev resync touches it again):
	// it is written once.
	b.addUnit(replace("r3", "r2"))
	b.addUnit(unit{{Op: view.OpTouch, Tuple: rev("r2")}})
	want = []view.Update{{Op: view.OpDelete, Tuple: rev("r0")}, {Op: view.OpTouch, Tuple: rev("r2")}}
	if got := b.updates(); !slices.Equal(got, want) {
		t.Fatalf("back to r2: %v, want %v", got, want)
	}
	// A rev touched without replacing one (the repo stored no rev, or a
	// same-rev touch) may exist already: it is deleted, not dropped.
	c := newBatch(2, MaxBatchUpdates)
	c.addUnit(unit{{Op: view.OpTouch, Tuple: rev("r5")}})
	c.addUnit(replace("r5", "r6"))
	want = []view.Update{{Op: view.OpDelete, Tuple: rev("r5")}, {Op: view.OpTouch, Tuple: rev("r6")}}
	if got := c.updates(); !slices.Equal(got, want) {
		t.Fatalf("untracked rev: %v, want %v", got, want)
	}
	// The repo removed: its rev created in this batch is dropped, the
	// stored one deleted.
	d := newBatch(3, MaxBatchUpdates)
	d.addUnit(replace("r6", "r7"))
	d.addUnit(unit{{Op: view.OpDelete, Tuple: rev("r7")}})
	want = []view.Update{{Op: view.OpDelete, Tuple: rev("r6")}}
	if got := d.updates(); !slices.Equal(got, want) {
		t.Fatalf("removed: %v, want %v", got, want)
	}
}
