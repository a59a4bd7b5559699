// Package backoff computes capped, jittered exponential delays for retry
// loops (reconnects, transient SpiceDB errors, repo fetches).
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields delays that double from Min up to Max, with full jitter in
// [d/2, d] so that many clients restarting together spread out. The zero
// value uses 250ms and 30s.
type Backoff struct {
	Min, Max time.Duration
	attempt  int
}

// Defaults used when Min or Max are zero.
const (
	DefaultMin = 250 * time.Millisecond
	DefaultMax = 30 * time.Second
)

// Next returns the delay before the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultMin
	}
	if hi <= 0 {
		hi = DefaultMax
	}
	d := lo
	for i := 0; i < b.attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	b.attempt++
	return d/2 + rand.N(d/2+1)
}

// Attempts is the number of delays handed out since the last Reset.
func (b *Backoff) Attempts() int { return b.attempt }

// Reset starts again from Min, after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Wait sleeps for the next delay or until ctx is done, whichever is first,
// and returns ctx.Err() in the second case.
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
