package projector

import (
	"slices"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/view"
)

// unit is a group of updates that must commit together: one record's data
// tuples with their lineage, or an event's bookkeeping.
type unit []view.Update

// batch is the content of one WriteRelationships call: updates collapsed to
// their final state (one op per relationship, the last decided wins), the
// events it completes, and what it applied for the read-your-writes index.
type batch struct {
	id    uint64
	limit int
	ups   map[view.Tuple]view.Op
	order []view.Tuple
	// seqs are the events fully applied once this batch commits.
	seqs []int64
	// revs are the repo revs applied once this batch commits.
	revs map[string]string
	// changes are the record changes this batch applies, for fan-out.
	changes []view.Change
	// events counts the events whose work is in this batch (metrics).
	events int
	// newestTime is the newest event time applied by this batch (lag).
	newestTime string
	// markers are the rebuild-marker changes this batch stores with its
	// data (the write's checkpoint step carries them).
	markers checkpoint.Markers
	// guards are the conditions the write needs (claims of repos: who owned
	// them and in what state, when it was read).
	guards []view.Guard
	// release are the progress holds this batch ends once it commits: the
	// deferred revs it stores (applier.deferRev).
	release []int64
	// newRevs are the rev tuples this batch creates (TOUCHed where the
	// unit also deleted the repo's previous rev): a later rev of the same
	// repo in this batch drops them instead of deleting them, so a repo
	// costs one DELETE and one TOUCH of its rev per batch, however many
	// of its commits the batch holds.
	newRevs map[view.Tuple]bool
	dropped bool // some tuple left ups after it was ordered
}

// maxBatchGuards bounds the guards of one batch, below what one call may
// carry (spice.MaxGuards).
const maxBatchGuards = 256

// guard adds conditions to the batch, once each.
func (b *batch) guard(gs ...view.Guard) {
	for _, g := range gs {
		if !slices.Contains(b.guards, g) {
			b.guards = append(b.guards, g)
		}
	}
}

func newBatch(id uint64, limit int) *batch {
	return &batch{id: id, limit: limit, ups: make(map[view.Tuple]view.Op), markers: checkpoint.NoMarkers()}
}

func (b *batch) empty() bool {
	return len(b.ups) == 0 && len(b.seqs) == 0 && len(b.revs) == 0 && len(b.changes) == 0 &&
		b.markers == checkpoint.NoMarkers()
}

func (b *batch) addUnit(u unit) {
	replacesRev := false
	for _, up := range u {
		replacesRev = replacesRev || (up.Op == view.OpDelete && isRev(up.Tuple))
	}
	for _, up := range u {
		if isRev(up.Tuple) {
			if up.Op == view.OpDelete && b.newRevs[up.Tuple] {
				// Created by this batch and superseded in it: it never
				// needs to exist.
				delete(b.ups, up.Tuple)
				delete(b.newRevs, up.Tuple)
				b.dropped = true
				continue
			}
			// A rev touched where its unit replaces a rev is new, unless
			// this batch deletes it: then it was stored before the batch
			// (a same-rev claim deletes and touches the stored rev) and
			// is not the batch's to drop.
			if op, had := b.ups[up.Tuple]; up.Op == view.OpTouch && replacesRev && (!had || op != view.OpDelete) {
				if b.newRevs == nil {
					b.newRevs = map[view.Tuple]bool{}
				}
				b.newRevs[up.Tuple] = true
			}
		}
		if _, seen := b.ups[up.Tuple]; !seen {
			b.order = append(b.order, up.Tuple)
		}
		b.ups[up.Tuple] = up.Op
	}
}

func isRev(t view.Tuple) bool { return t.Relation == view.RelRev && t.ResourceType == view.TypeRepo }

// fits reports whether n more updates surely fit (collapsing can only
// shrink them).
func (b *batch) fits(n int) bool { return len(b.ups)+n <= b.limit }

// updates lists the collapsed updates in first-decided order.
func (b *batch) updates() []view.Update {
	out := make([]view.Update, 0, len(b.ups))
	var emitted map[view.Tuple]bool
	if b.dropped {
		emitted = make(map[view.Tuple]bool, len(b.ups)) // a dropped tuple may be ordered twice
	}
	for _, t := range b.order {
		op, ok := b.ups[t]
		if !ok || emitted[t] {
			continue
		}
		if emitted != nil {
			emitted[t] = true
		}
		out = append(out, view.Update{Op: op, Tuple: t})
	}
	return out
}

func (b *batch) noteRev(did, rev string) {
	if rev == "" {
		return
	}
	if b.revs == nil {
		b.revs = map[string]string{}
	}
	if rev > b.revs[did] {
		b.revs[did] = rev
	}
}

func unitsLen(us []unit) int {
	n := 0
	for _, u := range us {
		n += len(u)
	}
	return n
}
