package projector

import "github.com/spaces-authz/spaces-authz/view"

// lineage is the in-memory view of which record produces which data tuple,
// for one repo. It is the overlay of DESIGN §3: it includes every decision
// already taken, committed to SpiceDB or not.
type lineage struct {
	byRecord  map[string]map[view.Tuple]struct{} // record path → tuples it produces
	producers map[view.Tuple]map[string]struct{} // tuple → record paths producing it
}

func newLineage() *lineage {
	return &lineage{byRecord: map[string]map[view.Tuple]struct{}{}, producers: map[view.Tuple]map[string]struct{}{}}
}

func (l *lineage) add(t view.Tuple, path string) {
	r := l.byRecord[path]
	if r == nil {
		r = map[view.Tuple]struct{}{}
		l.byRecord[path] = r
	}
	r[t] = struct{}{}
	p := l.producers[t]
	if p == nil {
		p = map[string]struct{}{}
		l.producers[t] = p
	}
	p[path] = struct{}{}
}

// remove drops one producer and reports whether the tuple has none left.
func (l *lineage) remove(t view.Tuple, path string) (orphaned bool) {
	if r := l.byRecord[path]; r != nil {
		delete(r, t)
		if len(r) == 0 {
			delete(l.byRecord, path)
		}
	}
	p := l.producers[t]
	if p == nil {
		return true
	}
	delete(p, path)
	if len(p) == 0 {
		delete(l.producers, t)
		return true
	}
	return false
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
	for t := range l.byRecord[path] {
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
