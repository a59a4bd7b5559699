package relaytest

import (
	"path/filepath"
	"testing"
	"time"
)

// Relay is a running (or stopped) relay process of a test: a Server whose
// failures fail the test, stopped when the test ends.
type Relay struct {
	*Server
	t testing.TB
}

// Start starts a relay on free loopback ports, registers cfg.Hosts and
// returns once it is subscribed to each of them. It fails the test when the
// relay binary or the sqlite3 CLI is missing (scripts/deps.sh installs both)
// or the relay does not come up. The relay is stopped when the test ends.
func Start(t testing.TB, cfg Config) *Relay {
	t.Helper()
	if err := checkConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.LogPath == "" {
		cfg.LogPath = filepath.Join(t.TempDir(), "relay.log")
	}
	t0 := time.Now()
	s, err := Launch(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := Adopt(t, s)
	r.logUp(t0)
	return r
}

// Adopt makes a running Server a test's Relay: stopped when the test ends,
// its log printed if the test failed.
func Adopt(t testing.TB, s *Server) *Relay {
	r := &Relay{Server: s, t: t}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relaytest: relay log (%s), last %d KB:\n%s", r.logPath, logTail>>10, r.logTailString())
		}
		if r.Running() {
			_ = r.proc.Stop(stopGrace)
		}
	})
	return r
}

// Start starts the relay again on the same ports, database and persister
// (after Kill or Stop; on a running relay it fails the test), and returns
// once its API answers and it is subscribed to every registered host. The
// relay resumes each host from the cursor it last persisted.
func (r *Relay) Start() {
	r.t.Helper()
	t0 := time.Now()
	if err := r.Server.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.logUp(t0)
}

// Stop stops the relay with SIGTERM (a clean shutdown that persists its
// host cursors), or SIGKILL after a grace period. It fails the test if the
// relay did not exit cleanly.
func (r *Relay) Stop() {
	r.t.Helper()
	if err := r.Server.Stop(); err != nil {
		r.t.Fatal(err)
	}
}

// AddHosts registers more hosts ("localhost:PORT") and returns once the
// relay is subscribed to all of its hosts; see Server.AddHosts. It fails the
// test on an error.
func (r *Relay) AddHosts(hosts ...string) {
	r.t.Helper()
	t0 := time.Now()
	wasRunning := r.Running()
	if err := r.Server.AddHosts(hosts...); err != nil {
		r.t.Fatal(err)
	}
	if wasRunning {
		r.logUp(t0)
	}
}

func (r *Relay) logUp(t0 time.Time) {
	r.t.Logf("relaytest: relay on %s up and subscribed to %v in %s", r.URL(), r.hosts, time.Since(t0).Round(time.Millisecond))
}
