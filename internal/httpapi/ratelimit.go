package httpapi

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// accountLimiter is a token bucket per account, bounded in memory: past
// max accounts, a new one first evicts the buckets that have refilled
// (a new bucket is the same), then the least recently used one (which
// then starts full again: the global bound on concurrent resyncs still
// holds).
type accountLimiter struct {
	every time.Duration
	burst int
	max   int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	lim *rate.Limiter
	// last is the last request of the account, allowed or not.
	last time.Time
}

func newAccountLimiter(every time.Duration, burst, maxAccounts int) *accountLimiter {
	return &accountLimiter{every: every, burst: burst, max: maxAccounts, buckets: map[string]*bucket{}}
}

// take spends one token of did's bucket at now. It returns 0 when one was
// there, otherwise how long until one is (and spends nothing).
func (l *accountLimiter) take(did string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[did]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = &bucket{lim: rate.NewLimiter(rate.Every(l.every), l.burst)}
		l.buckets[did] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// evict makes room for one bucket. l.mu is held.
func (l *accountLimiter) evict(now time.Time) {
	refill := l.every * time.Duration(l.burst)
	var (
		oldest   string
		oldestAt time.Time
	)
	for did, b := range l.buckets {
		if now.Sub(b.last) >= refill {
			delete(l.buckets, did)
			continue
		}
		if oldest == "" || b.last.Before(oldestAt) {
			oldest, oldestAt = did, b.last
		}
	}
	if len(l.buckets) >= l.max {
		delete(l.buckets, oldest)
	}
}

// len is the number of accounts tracked.
func (l *accountLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
