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

// logTail is how much of the relay's log an error (or a failed test) shows.
const logTail = 64 << 10

// DefaultAccountLimit is the account limit of the hosts Start registers.
const DefaultAccountLimit = 1000

// Config configures Start and Launch.
type Config struct {
	// PLCURL is the PLC directory the relay resolves DIDs with (required):
	// the one the hosts' accounts are registered in, e.g. localpds.PDS.PLCURL.
	PLCURL string
	// Hosts are the PDSs to subscribe to, each "localhost:PORT" (the
	// hostname of the PDS's public URL, which its accounts' DID documents
	// name). Optional: none, a relay with no upstream (AddHosts adds some).
	Hosts []string
	// DataDir holds the relay's SQLite database and its event persister.
	// Start: empty is a fresh t.TempDir(). Launch: required.
	DataDir string
	// LogPath is the relay's log file (JSON lines, appended). Start: empty
	// is a file in a fresh t.TempDir(). Launch: empty is relay.log in DataDir.
	LogPath string
	// LenientSyncValidation admits hosts that predate sync 1.1
	// (--lenient-sync-validation). Optional: false validates strictly.
	LenientSyncValidation bool
}

// hostRE is the only host form the relay subscribes to over plain ws://
// without its SSRF dialer, and the only form Start and Launch accept.
var hostRE = regexp.MustCompile(`^localhost:[0-9]{1,5}$`)

// Server is a relay process outside any test (cmd/localstack's federated
// stack runs one): every method reports its failure as an error. Relay is
// the same process for a test.
type Server struct {
	cfg           Config
	bin, sqlite   string
	dir           string
	logPath       string
	port, metrics int
	password      string
	hosts         []string

	proc *procs.Proc
}

// Launch starts a relay on free loopback ports, registers cfg.Hosts and
// returns once it is subscribed to each of them. It fails when the relay
// binary or the sqlite3 CLI is missing (scripts/deps.sh installs both) or the
// relay does not come up; it leaves no process behind then. The caller stops
// the relay (Stop); it also dies with the calling process (Pdeathsig).
func Launch(cfg Config) (*Server, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	if cfg.DataDir == "" {
		return nil, errors.New("relaytest: Launch: Config.DataDir is required")
	}
	s, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	// The relay creates its schema when it starts; the host rows go in
	// while it is stopped, and the next start subscribes to them.
	if err := s.Start(); err != nil {
		return nil, err
	}
	if len(cfg.Hosts) > 0 {
		if err := s.AddHosts(cfg.Hosts...); err != nil {
			_ = s.Stop()
			return nil, err
		}
	}
	return s, nil
}

func checkConfig(cfg Config) error {
	if cfg.PLCURL == "" {
		return errors.New("relaytest: Config.PLCURL is required")
	}
	for _, h := range cfg.Hosts {
		if !hostRE.MatchString(h) {
			return fmt.Errorf("relaytest: Config.Hosts: %q is not localhost:PORT", h)
		}
	}
	return nil
}

// newServer finds the binaries and picks the ports; it starts nothing.
func newServer(cfg Config) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	sqlite, err := sqliteBin()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, bin: bin, sqlite: sqlite, dir: cfg.DataDir, logPath: cfg.LogPath, password: randomHex(16)}
	if s.logPath == "" {
		s.logPath = filepath.Join(s.dir, "relay.log")
	}
	if s.port, err = spicedbtest.FreePort(); err != nil {
		return nil, err
	}
	if s.metrics, err = spicedbtest.FreePort(); err != nil {
		return nil, err
	}
	return s, nil
}

// URL is the relay's HTTP base URL, http://127.0.0.1:PORT. It stays the
// same across Kill and Start.
func (s *Server) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", s.port) }

// SubscribeReposURL is the relay's firehose,
// ws://127.0.0.1:PORT/xrpc/com.atproto.sync.subscribeRepos.
func (s *Server) SubscribeReposURL() string {
	return fmt.Sprintf("ws://127.0.0.1:%d/xrpc/com.atproto.sync.subscribeRepos", s.port)
}

// MetricsURL is the relay's Prometheus endpoint, on loopback.
func (s *Server) MetricsURL() string { return fmt.Sprintf("http://127.0.0.1:%d/metrics", s.metrics) }

// AdminPassword is the password of the relay's /admin/ routes (HTTP basic
// auth, user "admin"); random per relay.
func (s *Server) AdminPassword() string { return s.password }

// DataDir holds the relay's database (relay.sqlite) and persister.
func (s *Server) DataDir() string { return s.dir }

// Hosts are the hosts registered so far.
func (s *Server) Hosts() []string { return slices.Clone(s.hosts) }

// LogPath is the relay's log file (JSON lines, appended across starts).
func (s *Server) LogPath() string { return s.logPath }

// Running reports whether the relay process is alive.
func (s *Server) Running() bool { return s.proc != nil && s.proc.Running() }

// Start starts the relay again on the same ports, database and persister
// (after Kill or Stop; a running relay is an error), and returns once its
// API answers and it is subscribed to every registered host. The relay
// resumes each host from the cursor it last persisted. On an error the relay
// is left stopped.
func (s *Server) Start() error {
	if s.Running() {
		return errors.New("relaytest: Start: the relay is already running")
	}
	off := s.logSize()
	args := []string{
		"--admin-password", s.password,
		"--plc-host", s.cfg.PLCURL,
		// The readiness signal is a debug line (see waitSubscribed).
		"--log-level", "debug",
		"serve",
		"--db-url", "sqlite://" + s.dbPath(),
		"--persist-dir", filepath.Join(s.dir, "persist"),
		"--bind", fmt.Sprintf("127.0.0.1:%d", s.port),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", s.metrics),
		"--allow-insecure-hosts",
		"--disable-request-crawl",
	}
	if s.cfg.LenientSyncValidation {
		args = append(args, "--lenient-sync-validation")
	}
	p, err := procs.Start(s.bin, args, nil, s.logPath, nil)
	if err != nil {
		return err
	}
	s.proc = p
	deadline := time.Now().Add(DefaultStartTimeout)
	err = s.waitHealthy(deadline)
	if err == nil {
		err = s.waitSubscribed(off, s.hosts, deadline)
	}
	if err != nil {
		s.Kill()
		<-s.proc.Done()
		return err
	}
	return nil
}

// Kill sends SIGKILL: the relay persists nothing more (its host cursors
// stay at what it last flushed, so a Start replays from there).
func (s *Server) Kill() {
	if s.proc != nil {
		s.proc.Kill()
	}
}

// Stop stops the relay with SIGTERM (a clean shutdown that persists its
// host cursors), or SIGKILL after a grace period. It reports an error if
// the relay did not exit cleanly. A stopped relay is no error.
func (s *Server) Stop() error {
	if !s.Running() {
		return nil
	}
	if err := s.proc.Stop(stopGrace); err != nil {
		return fmt.Errorf("relaytest: stop: %w", err)
	}
	return nil
}

// AddHosts registers more hosts ("localhost:PORT") and returns once the
// relay is subscribed to all of its hosts. It restarts the relay (see the
// package documentation for why); hosts already registered are kept and
// resume from their cursors. A stopped relay stays stopped, and its next
// Start waits for the new hosts too.
func (s *Server) AddHosts(hosts ...string) error {
	var stmts []string
	for _, h := range hosts {
		if !hostRE.MatchString(h) {
			return fmt.Errorf("relaytest: AddHosts: %q is not localhost:PORT", h)
		}
		// hostRE admits no quote: the value is safe to inline.
		stmts = append(stmts, fmt.Sprintf(`INSERT INTO host
  (created_at, updated_at, hostname, no_ssl, account_limit, trusted, status, last_seq, account_count)
  VALUES (%[1]s, %[1]s, '%[2]s', 1, %[3]d, 1, 'active', -1, 0)
  ON CONFLICT(hostname) DO UPDATE SET status = 'active';`,
			`strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')`, h, DefaultAccountLimit))
	}
	wasRunning := s.Running()
	if err := s.Stop(); err != nil {
		return err
	}
	cmd := exec.Command(s.sqlite, "-bail", "-cmd", ".timeout 5000", s.dbPath())
	cmd.Stdin = strings.NewReader(strings.Join(stmts, "\n"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("relaytest: register hosts in %s: %w\n%s", s.dbPath(), err, out)
	}
	for _, h := range hosts {
		if !slices.Contains(s.hosts, h) {
			s.hosts = append(s.hosts, h)
		}
	}
	if wasRunning {
		return s.Start()
	}
	return nil
}

// Log returns the relay's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

func (s *Server) dbPath() string { return filepath.Join(s.dir, "relay.sqlite") }

func (s *Server) logSize() int64 {
	fi, err := os.Stat(s.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func (s *Server) logTailString() string {
	l := s.Log()
	if len(l) > logTail {
		l = "..." + l[len(l)-logTail:]
	}
	return l
}

// waitHealthy polls /xrpc/_health until it answers 200.
func (s *Server) waitHealthy(deadline time.Time) error {
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(s.URL() + "/xrpc/_health")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if !s.proc.Running() {
			return fmt.Errorf("relaytest: the relay exited during startup (%w); log:\n%s", s.exitErr(), s.logTailString())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relaytest: %s/xrpc/_health did not answer within %s (last error %w); log:\n%s",
				s.URL(), DefaultStartTimeout, err, s.logTailString())
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
func (s *Server) waitSubscribed(off int64, hosts []string, deadline time.Time) error {
	pending := map[string]bool{}
	for _, h := range hosts {
		pending[h] = true
	}
	lastErr := map[string]string{}
	var partial []byte
	for len(pending) > 0 {
		f, err := os.Open(s.logPath)
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
		if !s.proc.Running() {
			return fmt.Errorf("relaytest: the relay exited before subscribing to %v (%w); log:\n%s",
				keys(pending), s.exitErr(), s.logTailString())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relaytest: not subscribed to %v within %s (last errors %v); log:\n%s",
				keys(pending), DefaultStartTimeout, lastErr, s.logTailString())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// exitErr is how the relay process ended, never nil (for %w).
func (s *Server) exitErr() error {
	if err := s.proc.ExitErr(); err != nil {
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
