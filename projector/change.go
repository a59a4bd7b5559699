package projector

import (
	"sync"

	"github.com/spaces-authz/spaces-authz/view"
)

// Poison is the set of relationships SpiceDB refused. Records that would
// produce one are rejected (reason spicedb_refused). It survives pipeline
// restarts within a process.
type Poison struct {
	mu sync.RWMutex
	m  map[view.Tuple]struct{}
}

// NewPoison returns an empty set.
func NewPoison() *Poison { return &Poison{m: map[view.Tuple]struct{}{}} }

// Add marks t as refused.
func (p *Poison) Add(t view.Tuple) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[t] = struct{}{}
}

// Has reports whether t was refused.
func (p *Poison) Has(t view.Tuple) bool {
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
