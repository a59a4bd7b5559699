package projector

import (
	"sync"
	"time"

	"github.com/spaces-authz/spaces-authz/firehose"
)

// engineStatus is what the status endpoint and the lag gauge read.
type engineStatus struct {
	mu          sync.Mutex
	lastCommit  time.Time
	appliedTime time.Time
	events      int64
	batches     int64
	desynced    int
	desyncDIDs  []string
	blocking    int
	// the latest rebuild's progress
	rbDone, rbTotal, rbRecords int
}

func (s *engineStatus) rebuildProgress(done, total, records int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rbDone, s.rbTotal, s.rbRecords = done, total, records
}

func (s *engineStatus) desync(n int, dids []string, blocking int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.desynced, s.desyncDIDs, s.blocking = n, dids, blocking
}

func (s *engineStatus) applied(b *batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastCommit = time.Now()
	s.events += int64(b.events)
	if len(b.ups) > 0 {
		s.batches++
	}
	if t, ok := firehose.EventTime(&firehose.Event{Time: b.newestTime}); ok && t.After(s.appliedTime) {
		s.appliedTime = t
	}
}

// Status is a snapshot of the engine's progress.
type Status struct {
	// AppliedEventTime is the `time` of the newest event whose effects are
	// committed.
	AppliedEventTime time.Time
	LastCommit       time.Time
	EventsWritten    int64
	Batches          int64
	CachedRepos      int
	Poisoned         int
	// Desynchronized counts repos whose last resync failed (retried until
	// one succeeds); DesyncDIDs lists some of them (at most 100).
	Desynchronized int
	DesyncDIDs     []string
	// RebuildIncomplete counts the desynchronized repos a rebuild waits
	// for: while it is not 0, the rebuild is not done.
	RebuildIncomplete int
	// RebuildDone and RebuildTotal are the repos the latest rebuild has
	// resynced and knows of so far (the total grows while the PDS's repos
	// are listed), RebuildRecords the records it read: what a person
	// watching `consumer rebuild` sees.
	RebuildDone, RebuildTotal, RebuildRecords int
}

// Status returns the engine's progress.
func (e *Engine) Status() Status {
	e.status.mu.Lock()
	st := Status{AppliedEventTime: e.status.appliedTime, LastCommit: e.status.lastCommit,
		EventsWritten: e.status.events, Batches: e.status.batches, Poisoned: e.cfg.Poison.Len(),
		Desynchronized: e.status.desynced, DesyncDIDs: e.status.desyncDIDs, RebuildIncomplete: e.status.blocking,
		RebuildDone: e.status.rbDone, RebuildTotal: e.status.rbTotal, RebuildRecords: e.status.rbRecords}
	e.status.mu.Unlock()
	e.mu.Lock()
	st.CachedRepos = e.lru.Len()
	e.mu.Unlock()
	return st
}
