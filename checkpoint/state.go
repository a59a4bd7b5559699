package checkpoint

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/spaces-authz/spaces-authz/view"
)

// None is the seq of nothing: no cursor stored, no marker set, no event
// begun. It is the only such value in the project; a stream opened at None
// starts live.
const None int64 = -1

// State is the progress of one source as stored in SpiceDB, on the object
// projector:<source> (DESIGN §4).
type State struct {
	// Cursor: every seq at or below it is fully applied (None: no cursor,
	// a first run or a SpiceDB that was reset).
	Cursor int64
	// Rewind: after `consumer rewind`, each repo's first event at or below
	// this seq triggers a resync of that repo (None: no rewind pending). It
	// is cleared by the write whose cursor passes it.
	Rewind int64
	// Rebuild: a rebuild is in progress (None: none). A start that finds it
	// runs the rebuild again from the beginning.
	Rebuild int64
}

// Empty is the state of a source with nothing stored.
func Empty() State { return State{Cursor: None, Rewind: None, Rebuild: None} }

// FirstRun reports a source with neither a cursor nor a rebuild marker: the
// view must be built from repo snapshots before a cursor may be stored.
func (s State) FirstRun() bool { return s.Cursor == None && s.Rebuild == None }

// Decode folds one tuple of the source's object into s. It reports whether
// the tuple was progress (a cursor or a marker); other relations of the
// object (the lease's holder and heartbeat) are left to the caller. Two
// cursors are an error: guessing would skip or replay events.
func (s *State) Decode(t view.Tuple) (bool, error) {
	var dst *int64
	switch t.Relation {
	case view.RelCursor:
		dst = &s.Cursor
	case view.RelRewind:
		dst = &s.Rewind
	case view.RelRebuild:
		dst = &s.Rebuild
	default:
		return false, nil
	}
	n, err := strconv.ParseInt(t.SubjectID, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != t.SubjectID {
		// Only the canonical form: writes name the stored tuple by it
		// (a lease takeover's preconditions, a cursor's DELETE).
		return true, fmt.Errorf("checkpoint: %s holds a bad %s %q", t.ResourceID, t.Relation, t.SubjectID)
	}
	if t.Relation == view.RelCursor && s.Cursor != None {
		return true, fmt.Errorf("checkpoint: %s has two cursors (%d, %d): refusing to guess", t.ResourceID, s.Cursor, n)
	}
	*dst = max(*dst, n)
	return true, nil
}

// ErrNothingToRewind is returned by Rewind for a source with no cursor.
var ErrNothingToRewind = errors.New("no cursor stored yet: nothing to rewind (a first run rebuilds anyway)")

// Rewind plans `consumer rewind --to`: the cursor moves back to `to`, and
// the rewind marker is set at the old cursor (or kept, when an earlier
// rewind's marker is further), so that each repo's first replayed event at
// or below it triggers a resync and the view never moves backwards.
func Rewind(source string, st State, to int64) (Step, error) {
	if st.Cursor == None {
		return Step{}, ErrNothingToRewind
	}
	if to < 0 {
		return Step{}, fmt.Errorf("--to %d: a seq is not negative", to)
	}
	if to > st.Cursor {
		return Step{}, fmt.Errorf("--to %d is ahead of the cursor %d: rewinding forward would skip events", to, st.Cursor)
	}
	after := st
	after.Cursor = to
	after.Rewind = max(st.Cursor, st.Rewind)
	return diff(source, st, after), nil
}

// MoveTo plans a write that stores cursor as it is, markers untouched: a
// test's or a tool's "everything up to cursor is applied".
func MoveTo(source string, from State, cursor int64) Step {
	to := from
	to.Cursor = cursor
	return diff(source, from, to)
}

// diff is the write that turns stored state from into to.
func diff(source string, from, to State) Step {
	s := Step{from: from, to: to}
	move := func(rel string, tuple func(int64) view.Tuple, old, now int64) {
		if old == now {
			return
		}
		if now != None {
			s.ups = append(s.ups, view.Update{Op: view.OpTouch, Tuple: tuple(now)})
		}
		if old != None {
			s.ups = append(s.ups, view.Update{Op: view.OpDelete, Tuple: tuple(old)})
		}
	}
	move(view.RelCursor, func(n int64) view.Tuple { return view.CursorTuple(source, n) }, from.Cursor, to.Cursor)
	for _, rel := range []string{view.RelRewind, view.RelRebuild} {
		old, now := from.Rewind, to.Rewind
		if rel == view.RelRebuild {
			old, now = from.Rebuild, to.Rebuild
		}
		move(rel, func(n int64) view.Tuple { return view.MarkerTuple(source, rel, n) }, old, now)
	}
	return s
}

// Step is the progress part of one write: the updates that move the stored
// state, carried in the same WriteRelationships call as the data they cover.
type Step struct {
	ups      []view.Update
	from, to State
	// opens: this write stores the rebuild marker of a first run, so from
	// now on writes may carry the cursor.
	opens bool
}

// MaxStepUpdates bounds the updates of a Step: the cursor (a DELETE and a
// TOUCH), the rewind marker and the rebuild marker (one op each in a
// daemon's write, two each in a rewind's).
const MaxStepUpdates = 6

// Updates are the relationship updates of the step (nil when it stores
// nothing).
func (s Step) Updates() []view.Update { return s.ups }

// Empty reports a step that stores nothing.
func (s Step) Empty() bool { return len(s.ups) == 0 }

// After is the stored state once the step's write commits.
func (s Step) After() State { return s.to }
