package spice_test

import (
	"errors"
	"testing"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"time"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
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

// TestTakeoverKeepsOneCursor: a holder being taken over goes on writing
// cursors until it is fenced. One it writes between the new holder's read
// and the takeover must fail the takeover (which reads again), not stay
// next to the new holder's cursor. Before the takeover was guarded by the
// progress it read, the next start refused "two cursors" for good (seen in
// the e2e NATS test, where a killed process outlived its successor's start).
func TestTakeoverKeepsOneCursor(t *testing.T) {
	e := testenv.New(t)
	old, err := spice.AcquireLease(t.Context(), spice.LeaseConfig{Client: e.Client, Name: "p", Holder: "old"})
	if err != nil {
		t.Fatal(err)
	}
	w := spice.NewWriter(spice.WriterConfig{Client: e.Client, Name: "p", Holder: "old", HeartbeatMs: old.HeartbeatMs,
		Epoch: old.Epoch})
	cursor := checkpoint.None
	move := func(seq int64) {
		t.Helper()
		step := checkpoint.MoveTo("p", checkpoint.State{Cursor: cursor, Rewind: checkpoint.None, Rebuild: checkpoint.None}, seq)
		if _, err := w.Write(t.Context(), nil, step.Updates(), nil); err != nil {
			t.Fatal(err)
		}
		cursor = seq
	}
	move(10)
	calls := 0
	st, err := spice.AcquireLease(t.Context(), spice.LeaseConfig{Client: e.Client, Name: "p", Holder: "new", Takeover: true,
		Now: func() time.Time {
			// Between the takeover's read and its write, the old holder
			// (not fenced yet) stores a further cursor.
			if calls++; calls == 1 {
				move(31)
			}
			return time.Now()
		}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Progress.Cursor != 31 {
		t.Fatalf("the new holder starts from cursor %d, want 31 (the old holder's last)", st.Progress.Cursor)
	}
	w2 := spice.NewWriter(spice.WriterConfig{Client: e.Client, Name: "p", Holder: "new", HeartbeatMs: st.HeartbeatMs,
		Epoch: st.Epoch})
	step := checkpoint.MoveTo("p", st.Progress, 40)
	if _, err := w2.Write(t.Context(), nil, step.Updates(), nil); err != nil {
		t.Fatal(err)
	}
	got, err := e.Client.ReadProjector(t.Context(), "p")
	if err != nil {
		t.Fatalf("after the takeover: %v", err)
	}
	if got.Progress.Cursor != 40 {
		t.Fatalf("cursor %d, want 40", got.Progress.Cursor)
	}
}

// TestRestoredProgressIsNoticed: SpiceDB restored from a backup under a
// running writer holds an older cursor, or (a backup taken between a data
// write and the cursor write that trails it) the same cursor with an older
// heartbeat. Either way the writer's next write must fail with
// ErrProgressMoved, so that the run restarts from what is stored, rather
// than go on from its memory over the gap (DESIGN §5). Both cases wrote on
// before the preconditions.
func TestRestoredProgressIsNoticed(t *testing.T) {
	for _, tc := range []struct {
		name string
		// restore rewrites the projector's tuples as a backup would
		// have them, given the stored cursor and heartbeat.
		restore func(cursor, hb int64) []view.Update
	}{
		{"older cursor", func(cursor, _ int64) []view.Update {
			return []view.Update{{Op: view.OpDelete, Tuple: view.CursorTuple("p", cursor)},
				{Op: view.OpTouch, Tuple: view.CursorTuple("p", cursor-5)}}
		}},
		{"same cursor, older heartbeat", func(_, hb int64) []view.Update {
			return []view.Update{{Op: view.OpDelete, Tuple: view.HeartbeatTuple("p", hb)},
				{Op: view.OpTouch, Tuple: view.HeartbeatTuple("p", hb-3000)}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testenv.New(t)
			st, err := spice.AcquireLease(t.Context(), spice.LeaseConfig{Client: e.Client, Name: "p", Holder: "h"})
			if err != nil {
				t.Fatal(err)
			}
			w := spice.NewWriter(spice.WriterConfig{Client: e.Client, Name: "p", Holder: "h", HeartbeatMs: st.HeartbeatMs,
				Epoch: st.Epoch})
			state := checkpoint.State{Cursor: checkpoint.None, Rewind: checkpoint.None, Rebuild: checkpoint.None}
			move := func(seq int64) error {
				step := checkpoint.MoveTo("p", state, seq)
				_, err := w.Write(t.Context(), nil, step.Updates(), nil)
				if err == nil {
					state.Cursor = seq
				}
				return err
			}
			if err := move(10); err != nil {
				t.Fatal(err)
			}
			stored, err := e.Client.ReadProjector(t.Context(), "p")
			if err != nil {
				t.Fatal(err)
			}
			var ups []*v1.RelationshipUpdate
			for _, u := range tc.restore(stored.Progress.Cursor, stored.HeartbeatMs) {
				op := v1.RelationshipUpdate_OPERATION_TOUCH
				if u.Op == view.OpDelete {
					op = v1.RelationshipUpdate_OPERATION_DELETE
				}
				ups = append(ups, &v1.RelationshipUpdate{Operation: op, Relationship: e.Client.ToV1(u.Tuple)})
			}
			if _, err := e.Client.API().WriteRelationships(t.Context(), &v1.WriteRelationshipsRequest{Updates: ups}); err != nil {
				t.Fatal(err)
			}
			if err := move(20); !errors.Is(err, spice.ErrProgressMoved) {
				t.Fatalf("write after the restore: %v, want ErrProgressMoved", err)
			}
			// Not fatal to the lease: a new run from what is stored writes.
			st, err = e.Client.ReadProjector(t.Context(), "p")
			if err != nil {
				t.Fatal(err)
			}
			w = spice.NewWriter(spice.WriterConfig{Client: e.Client, Name: "p", Holder: "h", HeartbeatMs: st.HeartbeatMs,
				Epoch: st.Epoch})
			state = st.Progress
			if err := move(20); err != nil {
				t.Fatalf("a new run after the restore: %v", err)
			}
		})
	}
}
