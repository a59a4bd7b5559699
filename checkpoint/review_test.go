package checkpoint

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMemReviewStepRacesAHold: Step reads the oldest hold (under p.mu)
// BEFORE it reads the watermark (under the tracker's lock). The writer
// goroutine plans a step while the applier goroutine decides events, so
// this interleaving is reachable:
//
//	writer:  Step: oldest = None (no hold yet)
//	applier: deferRev: Progress.Hold(1); settle: Tracker.Done(1)
//	writer:  Step: watermark = 1 -> cursor 1
//
// The write stores cursor 1 although seq 1's rev is held (not stored): a
// crash then replays from 2, the stored rev is older than seq 1's, and the
// repo's next commit (since = seq 1's rev) is a false gap (a resync),
// which DESIGN §4 says a deferred rev never causes.
//
// The test pauses Step exactly there by holding the tracker's lock, and
// applies Done(1)'s effect under that lock.
func TestMemReviewStepRacesAHold(t *testing.T) {
	p, err := New(Config{Source: "default", Stored: State{Cursor: 0, Rewind: None, Rebuild: None}})
	if err != nil {
		t.Fatal(err)
	}
	tr := p.Tracker()
	if err := tr.Begin(context.Background(), 1); err != nil {
		t.Fatal(err)
	}

	tr.mu.Lock() // Step will stop on it, after it read the holds
	stepped := make(chan Step, 1)
	go func() { stepped <- p.Step(NoMarkers()) }()
	deadline := time.Now().Add(5 * time.Second)
	for !goroutineIn("(*Tracker).Watermark") {
		if time.Now().After(deadline) {
			tr.mu.Unlock()
			t.Fatal("Step never reached the watermark read")
		}
		time.Sleep(time.Millisecond)
	}
	// The applier: deferRev holds seq 1, then settles it (Tracker.Done(1),
	// done here in place since the writer is parked on the tracker's lock).
	p.Hold(1)
	tr.q[tr.head].done = true
	tr.wm = 1
	tr.head++
	<-tr.space
	tr.q, tr.head = tr.q[:0], 0
	tr.mu.Unlock()

	s := <-stepped
	p.Committed(s)
	if c := p.Stored().Cursor; c >= 1 {
		t.Fatalf("the stored cursor is %d while seq 1 is held (its rev not stored): Step read the holds before the watermark", c)
	}
}

// goroutineIn reports whether some goroutine's stack names fn.
func goroutineIn(fn string) bool {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Contains(string(buf[:n]), fn)
}
