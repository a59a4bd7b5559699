package checkpoint

import (
	"context"
	"testing"
	"time"
)

// TestTrackerTimes: the applied time is the newest event time the
// watermark has passed (not of an event done out of order above it), the
// pending time the oldest event's in flight.
func TestTrackerTimes(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tr := NewTracker(10, 0, nil)
	ctx := context.Background()
	for seq := int64(11); seq <= 14; seq++ {
		if err := tr.BeginEvent(ctx, seq, 0, at(int(seq))); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		done             int64
		applied, pending time.Time
	}{
		{0, time.Time{}, at(11)},
		{12, time.Time{}, at(11)}, // done above the watermark: not applied yet
		{11, at(12), at(13)},
		{14, at(12), at(13)},
		{13, at(14), time.Time{}},
	} {
		if step.done > 0 {
			tr.Done(step.done)
		}
		if a, p := tr.Times(); !a.Equal(step.applied) || !p.Equal(step.pending) {
			t.Fatalf("after done %d: applied %v pending %v; want %v, %v", step.done, a, p, step.applied, step.pending)
		}
	}
}
