package httpapi

import (
	"fmt"
	"testing"
	"time"
)

// TestAccountLimiterBucket: burst requests pass, the next waits for the
// refill, and a token comes back after every interval.
func TestAccountLimiterBucket(t *testing.T) {
	t.Parallel()
	l := newAccountLimiter(time.Minute, 2, 10)
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 2 {
		if d := l.take("did:plc:a", t0); d != 0 {
			t.Fatalf("request %d within the burst waits %s", i, d)
		}
	}
	if d := l.take("did:plc:a", t0.Add(10*time.Second)); d != 50*time.Second {
		t.Fatalf("past the burst: wait %s, want 50s", d)
	}
	// A refused request spends nothing: one token is back a minute on.
	if d := l.take("did:plc:a", t0.Add(time.Minute)); d != 0 {
		t.Fatalf("a minute later: wait %s, want 0", d)
	}
	if d := l.take("did:plc:a", t0.Add(time.Minute)); d == 0 {
		t.Fatal("a second request a minute later passed: the bucket holds one token per minute")
	}
}

// TestAccountLimiterBounded: the tracked accounts never exceed the bound;
// refilled buckets go first, then the least recently used, and a busy
// account keeps its bucket.
func TestAccountLimiterBounded(t *testing.T) {
	t.Parallel()
	l := newAccountLimiter(time.Hour, 1, 3)
	t0 := time.Unix(1_800_000_000, 0)
	l.take("did:plc:busy", t0)
	for i := range 100 {
		now := t0.Add(time.Duration(i) * time.Second)
		l.take(fmt.Sprintf("did:plc:%03d", i), now)
		if d := l.take("did:plc:busy", now); d == 0 {
			t.Fatalf("at %d: the busy account was evicted and got a fresh bucket", i)
		}
		if n := l.len(); n > 3 {
			t.Fatalf("at %d: %d accounts tracked, bound 3", i, n)
		}
	}
	// Two hours on every bucket has refilled: all are evicted at once.
	l.take("did:plc:new", t0.Add(2*time.Hour))
	if n := l.len(); n != 1 {
		t.Fatalf("%d accounts tracked after the refill, want 1", n)
	}
}
