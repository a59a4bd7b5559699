package projector

import (
	"sort"
	"testing"

	"github.com/spaces-authz/spaces-authz/view"
)

func tup(res, rel, sub string) view.Tuple {
	return view.Tuple{ResourceType: view.TypeSpace, ResourceID: res, Relation: rel, SubjectType: view.TypeAcct, SubjectID: sub}
}

func render(us []view.Update) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.String()
	}
	sort.Strings(out)
	return out
}

func TestLineageSharedTupleStaysWhileAnyProducerLives(t *testing.T) {
	const did = "did:plc:alice"
	l := newLineage()
	v := tup("did|plc|alice/s", "viewer", "did|plc|bob")
	r1, r2 := "com.atproto.space.relation/a", "com.atproto.space.relation/b"

	out := l.recordChange(did, r1, []view.Tuple{v}, true, nil)
	out = l.recordChange(did, r2, []view.Tuple{v}, true, out)
	if len(out) != 4 { // TOUCH v twice (collapsed later) + two lineage tuples
		t.Fatalf("creates: %v", render(out))
	}
	out = l.recordChange(did, r1, nil, true, nil)
	if got := render(out); len(got) != 1 || got[0] != "delete "+view.LineageTuple(v, view.RecordID(did, "com.atproto.space.relation", "a")).String() {
		t.Fatalf("deleting one of two producers: %v", got)
	}
	out = l.recordChange(did, r2, nil, true, nil)
	got := render(out)
	if len(got) != 2 || got[1] != "delete "+v.String() {
		t.Fatalf("deleting the last producer: %v", got)
	}
	if l.size() != 0 || len(l.byRecord) != 0 {
		t.Fatalf("lineage not empty: %+v", l)
	}
}

func TestLineageUpdateMovesGrant(t *testing.T) {
	const did = "did:plc:alice"
	l := newLineage()
	a := tup("did|plc|alice/s", "viewer", "did|plc|bob")
	b := tup("did|plc|alice/s", "viewer", "did|plc|carol")
	r := "com.atproto.space.relation/x"
	l.recordChange(did, r, []view.Tuple{a}, true, nil)
	out := l.recordChange(did, r, []view.Tuple{b}, true, nil)
	rid := view.RecordID(did, "com.atproto.space.relation", "x")
	want := render([]view.Update{{Op: view.OpTouch, Tuple: b}, {Op: view.OpTouch, Tuple: view.LineageTuple(b, rid)},
		{Op: view.OpDelete, Tuple: view.LineageTuple(a, rid)}, {Op: view.OpDelete, Tuple: a}})
	if got := render(out); len(got) != len(want) {
		t.Fatalf("got %v want %v", got, want)
	} else {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("got %v want %v", got, want)
			}
		}
	}
}

func TestLineageWithdrawnTouchesOnlyLineage(t *testing.T) {
	const did = "did:plc:alice"
	l := newLineage()
	a := tup("did|plc|alice/s", "viewer", "did|plc|bob")
	out := l.recordChange(did, "c/r", []view.Tuple{a}, false, nil)
	for _, u := range out {
		if u.Tuple.ResourceType != view.TypeLineage {
			t.Fatalf("withdrawn repo wrote data: %v", u)
		}
	}
	out = l.recordChange(did, "c/r", nil, false, nil)
	for _, u := range out {
		if u.Tuple.ResourceType != view.TypeLineage {
			t.Fatalf("withdrawn repo wrote data: %v", u)
		}
	}
}

func TestParentCycle(t *testing.T) {
	l := newLineage()
	edge := func(child, parent string) view.Tuple {
		return view.Tuple{ResourceType: view.TypeSpace, ResourceID: child, Relation: view.RelParent, SubjectType: view.TypeSpace, SubjectID: parent}
	}
	l.add(edge("a", "b"), "r/1")
	l.add(edge("b", "c"), "r/2")
	if l.parentCycle(edge("b", "c")) {
		t.Fatal("a chain is not a cycle")
	}
	l.add(edge("c", "a"), "r/3")
	if !l.parentCycle(edge("c", "a")) {
		t.Fatal("a → b → c → a not detected")
	}
	if l.parentCycle(tup("x", "viewer", "y")) {
		t.Fatal("non-parent tuple")
	}
}
