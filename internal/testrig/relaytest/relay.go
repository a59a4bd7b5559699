package relaytest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/procs"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
)

// DefaultStartTimeout bounds how long a start waits for the relay's API and
// for its subscriptions to every host. A start normally takes well under a
// second.
const DefaultStartTimeout = 60 * time.Second

// stopGrace is how long Stop waits after SIGTERM before it sends SIGKILL.
const stopGrace = 10 * time.Second

// logTail is how much of the relay's log a failed test prints.
const logTail = 64 << 10

// DefaultAccountLimit is the account limit of the hosts Start registers.
const DefaultAccountLimit = 1000

// Config configures Start.
type Config struct {
	// PLCURL is the PLC directory the relay resolves DIDs with (required):
	// the one the hosts' accounts are registered in, e.g. localpds.PDS.PLCURL.
	PLCURL string
	// Hosts are the PDSs to subscribe to, each "localhost:PORT" (the
	// hostname of the PDS's public URL, which its accounts' DID documents
	// name). Optional: none, a relay with no upstream (AddHosts adds some).
	Hosts []string
	// DataDir holds the relay's SQLite database and its event persister.
	// Optional: empty is a fresh t.TempDir().
	DataDir string
	// LenientSyncValidation admits hosts that predate sync 1.1
	// (--lenient-sync-validation). Optional: false validates strictly.
	LenientSyncValidation bool
}

// hostRE is the only host form the relay subscribes to over plain ws://
// without its SSRF dialer, and the only form Start accepts.
var hostRE = regexp.MustCompile(`^localhost:[0-9]{1,5}$`)

// Relay is a running (or stopped) relay process of a test.
type Relay struct {
	t             testing.TB
	cfg           Config
	bin, sqlite   string
	dir           string
	logPath       string
	port, metrics int
	password      string
	hosts         []string

	proc *procs.Proc
}

// Start starts a relay on free loopback ports, registers cfg.Hosts and
// returns once it is subscribed to each of them. It fails the test when the
// relay binary or the sqlite3 CLI is missing (scripts/deps.sh installs both)
// or the relay does not come up. The relay is stopped when the test ends.
func Start(t testing.TB, cfg Config) *Relay {
	t.Helper()
	if cfg.PLCURL == "" {
		t.Fatal("relaytest: Config.PLCURL is required")
	}
	for _, h := range cfg.Hosts {
		if !hostRE.MatchString(h) {
			t.Fatalf("relaytest: Config.Hosts: %q is not localhost:PORT", h)
		}
	}
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	sqlite, err := sqliteBin()
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{t: t, cfg: cfg, bin: bin, sqlite: sqlite, dir: cfg.DataDir, password: randomHex(16)}
	if r.dir == "" {
		r.dir = t.TempDir()
	}
	r.logPath = filepath.Join(t.TempDir(), "relay.log")
	if r.port, err = spicedbtest.FreePort(); err != nil {
		t.Fatal(err)
	}
	if r.metrics, err = spicedbtest.FreePort(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relaytest: relay log (%s), last %d KB:\n%s", r.logPath, logTail>>10, r.logTailString())
		}
		if r.proc != nil && r.proc.Running() {
			_ = r.proc.Stop(stopGrace)
		}
	})
	// The relay creates its schema when it starts; the host rows go in
	// while it is stopped, and the next start subscribes to them.
	r.Start()
	if len(cfg.Hosts) > 0 {
		r.AddHosts(cfg.Hosts...)
	}
	return r
}

// URL is the relay's HTTP base URL, http://127.0.0.1:PORT. It stays the
// same across Kill and Start.
func (r *Relay) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", r.port) }

// SubscribeReposURL is the relay's firehose,
// ws://127.0.0.1:PORT/xrpc/com.atproto.sync.subscribeRepos.
func (r *Relay) SubscribeReposURL() string {
	return fmt.Sprintf("ws://127.0.0.1:%d/xrpc/com.atproto.sync.subscribeRepos", r.port)
}

// MetricsURL is the relay's Prometheus endpoint, on loopback.
func (r *Relay) MetricsURL() string { return fmt.Sprintf("http://127.0.0.1:%d/metrics", r.metrics) }

// AdminPassword is the password of the relay's /admin/ routes (HTTP basic
// auth, user "admin"); random per relay.
func (r *Relay) AdminPassword() string { return r.password }

// DataDir holds the relay's database (relay.sqlite) and persister.
func (r *Relay) DataDir() string { return r.dir }

// Hosts are the hosts registered so far.
func (r *Relay) Hosts() []string { return slices.Clone(r.hosts) }

// LogPath is the relay's log file (JSON lines, appended across starts).
func (r *Relay) LogPath() string { return r.logPath }

// Running reports whether the relay process is alive.
func (r *Relay) Running() bool { return r.proc != nil && r.proc.Running() }

// Start starts the relay again on the same ports, database and persister
// (after Kill or Stop; on a running relay it fails the test), and returns
// once its API answers and it is subscribed to every registered host. The
// relay resumes each host from the cursor it last persisted.
func (r *Relay) Start() {
	r.t.Helper()
	if r.Running() {
		r.t.Fatal("relaytest: Start: the relay is already running")
	}
	off := r.logSize()
	t0 := time.Now()
	args := []string{
		"--admin-password", r.password,
		"--plc-host", r.cfg.PLCURL,
		// The readiness signal is a debug line (see waitSubscribed).
		"--log-level", "debug",
		"serve",
		"--db-url", "sqlite://" + r.dbPath(),
		"--persist-dir", filepath.Join(r.dir, "persist"),
		"--bind", fmt.Sprintf("127.0.0.1:%d", r.port),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", r.metrics),
		"--allow-insecure-hosts",
		"--disable-request-crawl",
	}
	if r.cfg.LenientSyncValidation {
		args = append(args, "--lenient-sync-validation")
	}
	p, err := procs.Start(r.bin, args, nil, r.logPath, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.proc = p
	deadline := time.Now().Add(DefaultStartTimeout)
	if err := r.waitHealthy(deadline); err != nil {
		r.t.Fatal(err)
	}
	if err := r.waitSubscribed(off, r.hosts, deadline); err != nil {
		r.t.Fatal(err)
	}
	r.t.Logf("relaytest: relay on %s up and subscribed to %v in %s", r.URL(), r.hosts, time.Since(t0).Round(time.Millisecond))
}

// Kill sends SIGKILL: the relay persists nothing more (its host cursors
// stay at what it last flushed, so a Start replays from there).
func (r *Relay) Kill() {
	if r.proc != nil {
		r.proc.Kill()
	}
}

// Stop stops the relay with SIGTERM (a clean shutdown that persists its
// host cursors), or SIGKILL after a grace period. It fails the test if the
// relay did not exit cleanly.
func (r *Relay) Stop() {
	r.t.Helper()
	if !r.Running() {
		return
	}
	if err := r.proc.Stop(stopGrace); err != nil {
		r.t.Fatalf("relaytest: stop: %v", err)
	}
}

// AddHosts registers more hosts ("localhost:PORT") and returns once the
// relay is subscribed to all of its hosts. It restarts the relay (see the
// package documentation for why); hosts already registered are kept and
// resume from their cursors. A stopped relay stays stopped, and its next
// Start waits for the new hosts too.
func (r *Relay) AddHosts(hosts ...string) {
	r.t.Helper()
	var stmts []string
	for _, h := range hosts {
		if !hostRE.MatchString(h) {
			r.t.Fatalf("relaytest: AddHosts: %q is not localhost:PORT", h)
		}
		// hostRE admits no quote: the value is safe to inline.
		stmts = append(stmts, fmt.Sprintf(`INSERT INTO host
  (created_at, updated_at, hostname, no_ssl, account_limit, trusted, status, last_seq, account_count)
  VALUES (%[1]s, %[1]s, '%[2]s', 1, %[3]d, 1, 'active', -1, 0)
  ON CONFLICT(hostname) DO UPDATE SET status = 'active';`,
			`strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')`, h, DefaultAccountLimit))
	}
	wasRunning := r.Running()
	r.Stop()
	cmd := exec.Command(r.sqlite, "-bail", "-cmd", ".timeout 5000", r.dbPath())
	cmd.Stdin = strings.NewReader(strings.Join(stmts, "\n"))
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("relaytest: register hosts in %s: %v\n%s", r.dbPath(), err, out)
	}
	for _, h := range hosts {
		if !slices.Contains(r.hosts, h) {
			r.hosts = append(r.hosts, h)
		}
	}
	if wasRunning {
		r.Start()
	}
}

// Log returns the relay's log so far.
func (r *Relay) Log() string {
	b, _ := os.ReadFile(r.logPath)
	return string(b)
}

func (r *Relay) dbPath() string { return filepath.Join(r.dir, "relay.sqlite") }

func (r *Relay) logSize() int64 {
	fi, err := os.Stat(r.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func (r *Relay) logTailString() string {
	s := r.Log()
	if len(s) > logTail {
		s = "..." + s[len(s)-logTail:]
	}
	return s
}

// waitHealthy polls /xrpc/_health until it answers 200.
func (r *Relay) waitHealthy(deadline time.Time) error {
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(r.URL() + "/xrpc/_health")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if !r.proc.Running() {
			return fmt.Errorf("relaytest: the relay exited during startup (%w); log:\n%s", r.exitErr(), r.logTailString())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relaytest: %s/xrpc/_health did not answer within %s (last error %w); log:\n%s",
				r.URL(), DefaultStartTimeout, err, r.logTailString())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logLine is what waitSubscribed reads of the relay's JSON log lines.
type logLine struct {
	Msg  string `json:"msg"`
	Host string `json:"host"`
	Err  string `json:"err"`
}

// waitSubscribed waits, in the log written after offset off, for the debug
// line the relay writes once its websocket to a host has been accepted
// ("event subscription response"), for every host. The subscription map
// the admin API exposes is filled before the dial, so it can't tell.
func (r *Relay) waitSubscribed(off int64, hosts []string, deadline time.Time) error {
	pending := map[string]bool{}
	for _, h := range hosts {
		pending[h] = true
	}
	lastErr := map[string]string{}
	var partial []byte
	for len(pending) > 0 {
		f, err := os.Open(r.logPath)
		if err != nil {
			return fmt.Errorf("relaytest: %w", err)
		}
		_, err = f.Seek(off, io.SeekStart)
		var chunk []byte
		if err == nil {
			chunk, err = io.ReadAll(f)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("relaytest: read log: %w", err)
		}
		off += int64(len(chunk))
		partial = append(partial, chunk...)
		for {
			line, rest, ok := bytes.Cut(partial, []byte("\n"))
			if !ok {
				break // an unfinished last line: read it whole next time
			}
			partial = rest
			var l logLine
			if json.Unmarshal(line, &l) != nil || !pending[l.Host] {
				continue
			}
			switch l.Msg {
			case "event subscription response":
				delete(pending, l.Host)
			case "dialing failed", "host connection failed":
				lastErr[l.Host] = l.Err
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if !r.proc.Running() {
			return fmt.Errorf("relaytest: the relay exited before subscribing to %v (%w); log:\n%s",
				keys(pending), r.exitErr(), r.logTailString())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relaytest: not subscribed to %v within %s (last errors %v); log:\n%s",
				keys(pending), DefaultStartTimeout, lastErr, r.logTailString())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// exitErr is how the relay process ended, never nil (for %w).
func (r *Relay) exitErr() error {
	if err := r.proc.ExitErr(); err != nil {
		return err
	}
	return errors.New("exit status 0")
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
