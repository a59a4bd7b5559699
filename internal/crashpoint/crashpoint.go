// Package crashpoint lets the crash-safety tests kill the consumer process
// at a chosen point of its work: CONSUMER_CRASH_AT=<point>:<n> makes the
// n-th Hit(point) send SIGKILL to the process itself. Without the variable
// Hit is a cheap no-op. It exists for tests only; nothing else sets it.
package crashpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// EnvVar names the variable read at the first Hit.
const EnvVar = "CONSUMER_CRASH_AT"

// Points the code marks.
const (
	AfterWrite   = "after-write"   // a batch committed, its events not yet marked done
	BeforeWrite  = "before-write"  // a batch built, not yet sent
	MidBatch     = "mid-batch"     // some events of a batch decided, others not
	DuringResync = "during-resync" // a repo snapshot fetched, not yet applied
	Reconnect    = "reconnect"     // a stream connection just opened
)

var (
	once  sync.Once
	point string
	at    int64
	hits  atomic.Int64
)

func load() {
	v := os.Getenv(EnvVar)
	p, n, ok := strings.Cut(v, ":")
	if !ok {
		return
	}
	if k, err := strconv.ParseInt(n, 10, 64); err == nil && k > 0 {
		point, at = p, k
	}
}

// Hit marks that the code passed point; it kills the process if this is
// the configured crash.
func Hit(p string) {
	once.Do(load)
	if point == "" || p != point {
		return
	}
	if hits.Add(1) == at {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns: the signal is on its way
	}
}
