package projector

import (
	"slices"

	"github.com/spaces-authz/spaces-authz/view"
)

// lineage is the in-memory view of which record produces which data tuple,
// for one repo. It is the overlay of DESIGN §3: it includes every decision
// already taken, committed to SpiceDB or not.
//
// It is kept small because the cache holds it for thousands of repos: a
// record produces one or a few tuples, so each record's tuples are a slice
// (a set: no tuple twice), and each tuple keeps only how many records
// produce it. (Small maps per entry cost about 1 KB per record.)
type lineage struct {
	byRecord  map[string][]view.Tuple // record path → tuples it produces
	producers map[view.Tuple]int32    // tuple → how many records produce it
}

func newLineage() *lineage {
	return &lineage{byRecord: map[string][]view.Tuple{}, producers: map[view.Tuple]int32{}}
}

func (l *lineage) add(t view.Tuple, path string) {
	r := l.byRecord[path]
	if slices.Contains(r, t) {
		return
	}
	l.byRecord[path] = append(r, t)
	l.producers[t]++
}

// remove drops one producer and reports whether the tuple has none left.
func (l *lineage) remove(t view.Tuple, path string) (orphaned bool) {
	r := l.byRecord[path]
	i := slices.Index(r, t)
	if i < 0 {
		return l.producers[t] == 0
	}
	if len(r) == 1 {
		delete(l.byRecord, path)
	} else {
		l.byRecord[path] = slices.Delete(r, i, i+1)
	}
	if l.producers[t]--; l.producers[t] > 0 {
		return false
	}
	delete(l.producers, t)
	return true
}

func (l *lineage) size() int { return len(l.producers) }

// recordChange diffs what record path produced before against what it
// produces now (want; nil for a deleted or rejected record), updates the
// lineage and appends the SpiceDB updates: TOUCH every wanted tuple (when
// the repo is active) and its lineage, DELETE lineage that no longer holds,
// and DELETE a data tuple only when its last producer is gone.
func (l *lineage) recordChange(did, path string, want []view.Tuple, active bool, out []view.Update) []view.Update {
	collection, rkey := splitPath(path)
	rid := view.RecordID(did, collection, rkey)
	wantSet := make(map[view.Tuple]struct{}, len(want))
	for _, t := range want {
		if _, dup := wantSet[t]; dup {
			continue
		}
		wantSet[t] = struct{}{}
		if active {
			out = append(out, view.Update{Op: view.OpTouch, Tuple: t})
		}
		out = append(out, view.Update{Op: view.OpTouch, Tuple: view.LineageTuple(t, rid)})
		l.add(t, path)
	}
	for _, t := range slices.Clone(l.byRecord[path]) {
		if _, keep := wantSet[t]; keep {
			continue
		}
		out = append(out, view.Update{Op: view.OpDelete, Tuple: view.LineageTuple(t, rid)})
		if l.remove(t, path) && active {
			out = append(out, view.Update{Op: view.OpDelete, Tuple: t})
		}
	}
	return out
}

func splitPath(path string) (collection, rkey string) {
	for i := 0; i < len(path); i++ {
		if path[i] == '/' {
			return path[:i], path[i+1:]
		}
	}
	return path, ""
}

// parentCycle reports whether the parent edge t (child → parent) closes a
// cycle among the repo's parent edges.
func (l *lineage) parentCycle(t view.Tuple) bool {
	if t.ResourceType != view.TypeSpace || t.Relation != view.RelParent {
		return false
	}
	parents := map[string][]string{}
	for e := range l.producers {
		if e.ResourceType == view.TypeSpace && e.Relation == view.RelParent {
			parents[e.ResourceID] = append(parents[e.ResourceID], e.SubjectID)
		}
	}
	seen := map[string]bool{}
	stack := []string{t.SubjectID}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == t.ResourceID {
			return true
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		stack = append(stack, parents[n]...)
	}
	return false
}
