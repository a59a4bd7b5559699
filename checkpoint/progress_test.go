package checkpoint

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/spaces-authz/spaces-authz/view"
)

// store is an in-memory stand-in for the source's object in SpiceDB: it
// applies steps' updates the way WriteRelationships would (TOUCH adds,
// DELETE removes) and decodes the result like a fresh start would. It lets
// these tests check that what a step writes and what Progress believes
// stored never disagree.
type store map[view.Tuple]bool

func (s store) apply(t *testing.T, step Step) {
	t.Helper()
	seen := map[view.Tuple]bool{}
	for _, u := range step.Updates() {
		if seen[u.Tuple] {
			t.Fatalf("one call names %s twice (SpiceDB refuses that)", u.Tuple)
		}
		seen[u.Tuple] = true
		if u.Op == view.OpTouch {
			s[u.Tuple] = true
		} else {
			delete(s, u.Tuple)
		}
	}
}

func (s store) state(t *testing.T) State {
	t.Helper()
	st := Empty()
	for tu := range s {
		if _, err := st.Decode(tu); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// commit plans a write with m, "writes" it and records the commit.
func commit(t *testing.T, p *Progress, s store, m Markers) Step {
	t.Helper()
	step := p.Step(m)
	s.apply(t, step)
	p.Committed(step)
	if got := s.state(t); got != p.Stored() {
		t.Fatalf("stored %+v, progress believes %+v", got, p.Stored())
	}
	return step
}

func begin(t *testing.T, p *Progress, seqs ...int64) {
	t.Helper()
	for _, s := range seqs {
		if err := p.Tracker().Begin(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFirstRunStoresNoCursorUntilTheRebuildMarker(t *testing.T) {
	s := store{}
	p, err := New(Config{Source: "default", Stored: Empty()})
	if err != nil {
		t.Fatal(err)
	}
	begin(t, p, 10, 11, 12)
	p.Tracker().Done(10)
	p.Tracker().Done(11)
	// Events decided before the marker commit without a cursor.
	if step := commit(t, p, s, NoMarkers()); !step.Empty() {
		t.Fatalf("a first run stored %v before its rebuild marker", step.Updates())
	}
	// The write that stores the marker stores the cursor too.
	commit(t, p, s, Markers{Place: 12, Clear: None})
	if st := p.Stored(); st.Cursor != 11 || st.Rebuild != 12 {
		t.Fatalf("with the marker: %+v, want cursor 11, marker 12", st)
	}
	p.Tracker().Done(12)
	commit(t, p, s, NoMarkers())
	if st := p.Stored(); st.Cursor != 12 {
		t.Fatalf("after the marker: cursor %d, want 12", st.Cursor)
	}
	// Clearing the marker ends the rebuild.
	commit(t, p, s, Markers{Place: None, Clear: 12})
	if st := p.Stored(); st.Rebuild != None || st.Cursor != 12 {
		t.Fatalf("after the rebuild: %+v", st)
	}
}

func TestMarkerPlacedAndClearedInOneWrite(t *testing.T) {
	s := store{}
	p, _ := New(Config{Source: "default", Stored: Empty()})
	begin(t, p, 1)
	p.Tracker().Done(1)
	step := commit(t, p, s, Markers{Place: 1, Clear: 1})
	if st := p.Stored(); st.Rebuild != None || st.Cursor != 1 {
		t.Fatalf("a rebuild done within one write: %+v", st)
	}
	for _, u := range step.Updates() {
		if u.Tuple.Relation == view.RelRebuild {
			t.Fatalf("the write names the marker: %v", u)
		}
	}
	// A second rebuild replaces nothing it should not.
	commit(t, p, s, Markers{Place: 5, Clear: None})
	commit(t, p, s, Markers{Place: 9, Clear: 5})
	if st := p.Stored(); st.Rebuild != 9 {
		t.Fatalf("marker %d, want 9", st.Rebuild)
	}
}

func TestRewindMarkerGoesOnceTheCursorPassesIt(t *testing.T) {
	s := store{}
	from := State{Cursor: 100, Rewind: None, Rebuild: None}
	s.apply(t, MoveTo("default", Empty(), 100))
	rw, err := Rewind("default", from, 40)
	if err != nil {
		t.Fatal(err)
	}
	s.apply(t, rw)
	stored := s.state(t)
	if stored != (State{Cursor: 40, Rewind: 100, Rebuild: None}) {
		t.Fatalf("after rewind: %+v", stored)
	}
	p, _ := New(Config{Source: "default", Stored: stored})
	if p.Rewind() != 100 {
		t.Fatalf("rewind marker of the run %d", p.Rewind())
	}
	begin(t, p, 41, 100, 101)
	p.Tracker().Done(41)
	p.Tracker().Done(100)
	commit(t, p, s, NoMarkers())
	if st := p.Stored(); st.Cursor != 100 || st.Rewind != 100 {
		t.Fatalf("at the marker: %+v (it covers seq 100: keep it)", st)
	}
	p.Tracker().Done(101)
	commit(t, p, s, NoMarkers())
	if st := p.Stored(); st.Cursor != 101 || st.Rewind != None {
		t.Fatalf("past the marker: %+v", st)
	}
	if p.Rewind() != 100 {
		t.Fatal("the run's rewind marker changed")
	}
}

func TestRewindKeepsTheFurthestMarkerAndRefusesForward(t *testing.T) {
	st := State{Cursor: 50, Rewind: 100, Rebuild: None}
	step, err := Rewind("default", st, 10)
	if err != nil {
		t.Fatal(err)
	}
	if after := step.After(); after.Rewind != 100 || after.Cursor != 10 {
		t.Fatalf("after %+v", after)
	}
	if _, err := Rewind("default", st, 60); err == nil || !strings.Contains(err.Error(), "ahead of the cursor") {
		t.Fatalf("rewinding forward: %v", err)
	}
	if _, err := Rewind("default", Empty(), 0); !errors.Is(err, ErrNothingToRewind) {
		t.Fatalf("rewind without a cursor: %v", err)
	}
}

func TestResumedRebuildIsNotGated(t *testing.T) {
	s := store{view.MarkerTuple("default", view.RelRebuild, 7): true}
	p, _ := New(Config{Source: "default", Stored: s.state(t)})
	begin(t, p, 8)
	p.Tracker().Done(8)
	commit(t, p, s, NoMarkers())
	if st := p.Stored(); st.Cursor != 8 {
		t.Fatalf("a resumed rebuild's marker is stored: the cursor may be too; got %+v", st)
	}
}

func TestDecode(t *testing.T) {
	st := Empty()
	for _, tu := range []view.Tuple{view.CursorTuple("d", 5), view.MarkerTuple("d", view.RelRewind, 9),
		view.HolderTuple("d", "c-1")} {
		if _, err := st.Decode(tu); err != nil {
			t.Fatal(err)
		}
	}
	if st != (State{Cursor: 5, Rewind: 9, Rebuild: None}) {
		t.Fatalf("%+v", st)
	}
	if _, err := st.Decode(view.CursorTuple("d", 6)); err == nil {
		t.Fatal("two cursors decoded without error")
	}
	bad := view.CursorTuple("d", 1)
	bad.SubjectID = "x"
	if _, err := (&State{Cursor: None}).Decode(bad); err == nil {
		t.Fatal("a cursor that is not a number decoded")
	}
	// Writes name stored progress by its canonical form (a takeover's
	// preconditions): another spelling of the number would never match.
	for _, id := range []string{"007", "+7", "-0"} {
		bad.SubjectID = id
		if _, err := (&State{Cursor: None}).Decode(bad); err == nil {
			t.Fatalf("cursor %q decoded", id)
		}
	}
}

// TestStepNeverStoresAheadOfTheWatermark drives random begin/done/commit
// sequences: the stored cursor never passes an event that is not done.
func TestStepNeverStoresAheadOfTheWatermark(t *testing.T) {
	s := store{}
	p, _ := New(Config{Source: "default", Stored: State{Cursor: 0, Rewind: None, Rebuild: None}})
	var open []int64
	next := int64(1)
	for i := range 2000 {
		switch i % 3 {
		case 0:
			begin(t, p, next)
			open = append(open, next)
			next++
		case 1:
			if len(open) > 0 {
				k := (i * 7919) % len(open)
				p.Tracker().Done(open[k])
				open = slices.Delete(open, k, k+1)
			}
		case 2:
			commit(t, p, s, NoMarkers())
			for _, o := range open {
				if p.Stored().Cursor >= o {
					t.Fatalf("cursor %d stored while %d is not done", p.Stored().Cursor, o)
				}
			}
		}
	}
}
