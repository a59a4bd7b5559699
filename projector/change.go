package projector

import (
	"sync"
)

// Change is one record operation the engine applied (or skipped as a
// duplicate, or rejected), as it is fanned out. Everything in it is a pure
// function of the event and the rules, so a re-publish after a crash is
// identical where it matters.
type Change struct {
	Seq        int64
	OpIndex    int
	DID        string
	Rev        string
	Time       string
	Collection string
	RKey       string
	Action     string
	CID        string
	Record     map[string]any
	// Produces are the tuples the record produces under the rules.
	Produces []Tuple
	// Rejected is the reason the record was rejected ("" when it wasn't);
	// RejectDetail says more, without the record body.
	Rejected     Reason
	RejectDetail string
	// Projected reports whether the collection is projected at all (raw
	// mode also publishes other collections).
	Projected bool
	// Duplicate: the commit was already applied; SpiceDB was not written.
	Duplicate bool
	// Resync: the change was found by a repo resync, not carried by the
	// stream event (Seq is the event that triggered the resync, or 0).
	Resync bool
}

// Poison is the set of relationships SpiceDB refused. Records that would
// produce one are rejected (reason spicedb_refused). It survives pipeline
// restarts within a process.
type Poison struct {
	mu sync.RWMutex
	m  map[Tuple]struct{}
}

// NewPoison returns an empty set.
func NewPoison() *Poison { return &Poison{m: map[Tuple]struct{}{}} }

// Add marks t as refused.
func (p *Poison) Add(t Tuple) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[t] = struct{}{}
}

// Has reports whether t was refused.
func (p *Poison) Has(t Tuple) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	_, ok := p.m[t]
	return ok
}

// Len is the number of refused relationships.
func (p *Poison) Len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.m)
}
