package checkpoint

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// DefaultMaxInFlight bounds the events a Tracker admits between Begin and the
// point where the watermark passes them.
const DefaultMaxInFlight = 20000

// DefaultMaxInFlightBytes bounds the frame bytes of those events: a stream
// of large commits (many projected records each) stops the reader long
// before the event count does.
const DefaultMaxInFlightBytes = 32 << 20

// Tracker keeps the watermark of completed events (DESIGN §4): every seq at
// or below Watermark() has been marked Done. Events are begun in stream
// order and may finish in any order; the watermark is one less than the
// oldest event not yet done. It is safe for concurrent use.
//
// Begin blocks while MaxInFlight events are between Begin and the watermark,
// so a stuck event eventually stops the reader instead of growing memory.
type Tracker struct {
	mu      sync.Mutex
	wm      int64 // watermark: all seq <= wm are done
	highest int64 // highest seq begun
	q       []entry
	head    int
	max     int
	space   chan struct{} // one token per admitted entry
	// bytes are the frame bytes of the admitted entries; BeginSized waits
	// while a new entry would take them past maxBytes.
	bytes, maxBytes int64
	changed         chan struct{} // closed and replaced when the watermark moves
	metrics         *Metrics
	// appliedAt is the newest event time the watermark has passed (lag).
	appliedAt time.Time
}

type entry struct {
	seq  int64
	size int64
	at   time.Time // the event's time, when known
	done bool
}

// NewTracker starts a tracker at cursor (None when there is none).
// maxInFlight <= 0 means DefaultMaxInFlight; m (optional) receives the
// watermark, in-flight and lag gauges.
func NewTracker(cursor int64, maxInFlight int, m *Metrics) *Tracker {
	if maxInFlight <= 0 {
		maxInFlight = DefaultMaxInFlight
	}
	t := &Tracker{wm: cursor, highest: cursor, max: maxInFlight, maxBytes: DefaultMaxInFlightBytes,
		space: make(chan struct{}, maxInFlight), changed: make(chan struct{}), metrics: m}
	m.tracked(t.wm, 0)
	return t
}

// SetMaxBytes bounds the frame bytes in flight (<= 0: the default). Call
// it before the first Begin.
func (t *Tracker) SetMaxBytes(n int64) {
	if n <= 0 {
		n = DefaultMaxInFlightBytes
	}
	t.mu.Lock()
	t.maxBytes = n
	t.mu.Unlock()
}

// Begin admits seq, which must be greater than every seq begun before. It
// blocks while the tracker is full.
func (t *Tracker) Begin(ctx context.Context, seq int64) error { return t.BeginSized(ctx, seq, 0) }

// BeginSized admits seq, an event read from a frame of size bytes. It
// blocks while the tracker holds MaxInFlight events, or while their frames
// and this one would pass the byte bound (an event is always admitted when
// nothing else is in flight, whatever its size).
func (t *Tracker) BeginSized(ctx context.Context, seq, size int64) error {
	return t.BeginEvent(ctx, seq, size, time.Time{})
}

// BeginEvent is BeginSized for an event whose time is at (zero when
// unknown): Times reports the times of the events around the watermark.
func (t *Tracker) BeginEvent(ctx context.Context, seq, size int64, at time.Time) error {
	select {
	case t.space <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	t.mu.Lock()
	for t.bytes > 0 && t.bytes+size > t.maxBytes {
		ch := t.changed
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			<-t.space
			return ctx.Err()
		}
		t.mu.Lock()
	}
	defer t.mu.Unlock()
	if seq <= t.highest {
		<-t.space
		return fmt.Errorf("checkpoint: tracker: seq %d begun after %d", seq, t.highest)
	}
	t.highest = seq
	t.bytes += size
	t.q = append(t.q, entry{seq: seq, size: size, at: at})
	t.metrics.tracked(t.wm, len(t.q)-t.head)
	return nil
}

// Done marks seq complete. Marking a seq that was never begun, or twice, is
// a no-op.
func (t *Tracker) Done(seq int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := t.q[t.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].seq >= seq })
	if i == len(live) || live[i].seq != seq {
		return
	}
	live[i].done = true
	moved := false
	for t.head < len(t.q) && t.q[t.head].done {
		t.wm = t.q[t.head].seq
		if at := t.q[t.head].at; at.After(t.appliedAt) {
			t.appliedAt = at
		}
		t.bytes -= t.q[t.head].size
		t.head++
		<-t.space
		moved = true
	}
	if t.head == len(t.q) {
		t.q, t.head = t.q[:0], 0
		t.wm = t.highest
	} else if t.head > 1024 && t.head > len(t.q)/2 {
		n := copy(t.q, t.q[t.head:])
		t.q, t.head = t.q[:n], 0
	}
	if moved {
		close(t.changed)
		t.changed = make(chan struct{})
	}
	t.metrics.tracked(t.wm, len(t.q)-t.head)
}

// Watermark returns the highest seq such that it and every seq before it are
// done, or None if there is none yet.
func (t *Tracker) Watermark() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.wm
}

// Times returns the newest event time the watermark has passed (the
// newest applied event's time) and the time of the oldest event in flight;
// each is zero when unknown (nothing passed or in flight, or begun without
// a time).
func (t *Tracker) Times() (applied, pending time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head < len(t.q) {
		pending = t.q[t.head].at
	}
	return t.appliedAt, pending
}

// Highest returns the highest seq begun (or the starting cursor).
func (t *Tracker) Highest() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.highest
}

// InFlightBytes returns the frame bytes of the events begun and not yet
// passed by the watermark.
func (t *Tracker) InFlightBytes() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bytes
}

// InFlight returns the number of events begun and not yet passed by the
// watermark.
func (t *Tracker) InFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.q) - t.head
}

// Changed returns a channel closed the next time the watermark moves.
func (t *Tracker) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}
