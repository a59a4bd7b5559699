//go:build crashpoints

package crashpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Enabled reports whether this build can crash on purpose.
const Enabled = true

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
