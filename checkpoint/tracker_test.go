package checkpoint

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

func TestTrackerOutOfOrder(t *testing.T) {
	tr := NewTracker(10, 0, nil)
	for _, s := range []int64{11, 12, 15, 20} {
		if err := tr.Begin(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		done int64
		want int64
	}{{12, 10}, {20, 10}, {11, 12}, {15, 20}}
	for _, s := range steps {
		tr.Done(s.done)
		if got := tr.Watermark(); got != s.want {
			t.Fatalf("after Done(%d): watermark %d, want %d", s.done, got, s.want)
		}
	}
	if tr.InFlight() != 0 {
		t.Fatalf("in flight %d", tr.InFlight())
	}
	if err := tr.Begin(t.Context(), 20); err == nil {
		t.Fatal("Begin of an old seq succeeded")
	}
}

func TestTrackerRandomized(t *testing.T) {
	tr := NewTracker(None, 0, nil)
	const n = 5000
	seqs := make([]int64, n)
	next := int64(0)
	for i := range seqs {
		next += 1 + rand.Int64N(3) // gaps, as after an account deletion
		seqs[i] = next
		if err := tr.Begin(t.Context(), next); err != nil {
			t.Fatal(err)
		}
	}
	done := make(map[int64]bool)
	for _, i := range rand.Perm(n) {
		tr.Done(seqs[i])
		done[seqs[i]] = true
		// the watermark is the last seq of the longest done prefix
		want := None
		for _, s := range seqs {
			if !done[s] {
				break
			}
			want = s
		}
		if got := tr.Watermark(); got != want {
			t.Fatalf("watermark %d, want %d", got, want)
		}
		if i%97 != 0 {
			continue
		}
	}
}

func TestTrackerBlocksWhenFull(t *testing.T) {
	tr := NewTracker(0, 2, nil)
	ctx := t.Context()
	_ = tr.Begin(ctx, 1)
	_ = tr.Begin(ctx, 2)
	blocked := make(chan error, 1)
	go func() { blocked <- tr.Begin(ctx, 3) }()
	select {
	case err := <-blocked:
		t.Fatalf("Begin did not block on a full tracker: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	tr.Done(2) // done but behind seq 1: still occupies room
	select {
	case err := <-blocked:
		t.Fatalf("Begin admitted past a stuck oldest event: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	tr.Done(1)
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_ = tr.Begin(ctx, 4)
	if err := tr.Begin(cctx, 5); err == nil {
		t.Fatal("Begin on a full tracker ignored a cancelled context")
	}
}

// TestTrackerBoundsBytesInFlight: BeginSized blocks while the frames in
// flight and the new one would pass the byte bound, and goes on once the
// watermark passes enough of them; one event is always admitted alone.
func TestTrackerBoundsBytesInFlight(t *testing.T) {
	tr := NewTracker(0, 100, nil)
	tr.SetMaxBytes(1000)
	ctx := context.Background()
	for seq := int64(1); seq <= 3; seq++ {
		if err := tr.BeginSized(ctx, seq, 300); err != nil {
			t.Fatal(err)
		}
	}
	admitted := make(chan error, 1)
	go func() { admitted <- tr.BeginSized(ctx, 4, 300) }()
	select {
	case err := <-admitted:
		t.Fatalf("1,200 bytes admitted under a 1,000-byte bound (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	tr.Done(2) // not passed by the watermark yet: still in flight
	select {
	case err := <-admitted:
		t.Fatalf("admitted before the watermark moved (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	tr.Done(1)
	if err := <-admitted; err != nil {
		t.Fatal(err)
	}
	if got := tr.InFlightBytes(); got != 600 {
		t.Fatalf("in flight %d bytes, want 600", got)
	}
	tr.Done(3)
	tr.Done(4)
	if err := tr.BeginSized(ctx, 5, 5000); err != nil { // alone, whatever its size
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := tr.BeginSized(cctx, 6, 1); err == nil {
		t.Fatal("admitted past the bound on a canceled context")
	}
	if tr.InFlight() != 1 {
		t.Fatalf("in flight %d events, want 1 (a canceled Begin must give its slot back)", tr.InFlight())
	}
}
