package spice_test

import (
	"errors"
	"testing"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
)

// TestMoveProgress writes a source's progress the way tools do (rewind):
// under the lease, given back afterwards, refused while a daemon holds it
// unless it is taken over.
func TestMoveProgress(t *testing.T) {
	e := testenv.New(t)
	lease := spice.LeaseConfig{Client: e.Client, Name: "tool", Holder: "tool-1"}
	load := func() checkpoint.State {
		t.Helper()
		st, err := e.Client.ReadProjector(t.Context(), "tool")
		if err != nil {
			t.Fatal(err)
		}
		return st.Progress
	}
	moveTo := func(seq int64) error {
		_, err := spice.MoveProgress(t.Context(), lease, func(st checkpoint.State) (checkpoint.Step, error) {
			return checkpoint.MoveTo("tool", st, seq), nil
		})
		return err
	}
	if st := load(); st != checkpoint.Empty() {
		t.Fatalf("empty: %+v", st)
	}
	for _, seq := range []int64{100, 90} {
		if err := moveTo(seq); err != nil {
			t.Fatal(err)
		}
	}
	if st := load(); st.Cursor != 90 {
		t.Fatalf("cursor %d, want 90 (one cursor tuple, the last)", st.Cursor)
	}
	// Rewind sets the marker at the old cursor, in the same call.
	before, err := spice.MoveProgress(t.Context(), lease, func(st checkpoint.State) (checkpoint.Step, error) {
		return checkpoint.Rewind("tool", st, 40)
	})
	if err != nil || before.Cursor != 90 {
		t.Fatalf("rewind: %+v %v", before, err)
	}
	if st := load(); st.Cursor != 40 || st.Rewind != 90 {
		t.Fatalf("after rewind: %+v, want cursor 40, marker 90", st)
	}
	if st, err := e.Client.ReadProjector(t.Context(), "tool"); err != nil || st.Holder != "" {
		t.Fatalf("the lease was not released: %+v %v", st, err)
	}
	// A live holder blocks a tool unless it takes over.
	if _, err := spice.AcquireLease(t.Context(), spice.LeaseConfig{Client: e.Client, Name: "tool", Holder: "daemon"}); err != nil {
		t.Fatal(err)
	}
	if err := moveTo(80); !errors.Is(err, spice.ErrLeaseHeld) {
		t.Fatalf("moved under another consumer's live lease: %v", err)
	}
	lease.Takeover = true
	if err := moveTo(80); err != nil {
		t.Fatal(err)
	}
	if st := load(); st.Cursor != 80 || st.Rewind != 90 {
		t.Fatalf("after takeover: %+v", st)
	}
}
