package localpds

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultStartTimeout bounds how long Start and Restart wait for a process's
// ready line when ctx has no deadline. Startup normally takes 1-2 s.
const DefaultStartTimeout = 90 * time.Second

// stopGrace is how long Stop waits after SIGTERM before it sends SIGKILL.
const stopGrace = 10 * time.Second

// Options configures Start.
type Options struct {
	// DataDir is the PDS data directory (sqlite databases, blobs, the mail
	// outbox and the PDS secrets in local-pds.json). It is kept by Stop, and a
	// later Start on the same directory reuses it (but DIDs resolve only if
	// that Start shares the PLC that created them, see SharePLC and
	// PDS.Restart). Empty: a fresh temporary directory (under /dev/shm when
	// available), removed by Stop.
	DataDir string
	// SharePLC, if set, is a running PDS whose PLC directory the new PDS
	// uses instead of starting its own, so that both resolve the same DIDs:
	// an account can move from one to the other (Migrate). Each PDS still has
	// its own port, public URL, service DID, data dir and firehose. The PLC
	// keeps running until every PDS that uses it has been stopped, in any
	// order. Nil: start a new PLC.
	SharePLC *PDS
	// BackfillLimit is the firehose replay window (repoBackfillLimitMs): a
	// subscribeRepos cursor older than this gets #info OutdatedCursor.
	// Zero: the PDS default (1 day).
	BackfillLimit time.Duration
	// MaxSubscriptionBuffer is the per-subscriber outbox buffer of the
	// firehose. Zero: the PDS default (500).
	MaxSubscriptionBuffer int
	// Stderr receives the stderr (and any stray stdout) of the PLC and PDS
	// processes. Nil: discarded (the last few KB still appear in start errors).
	Stderr io.Writer
	// LogFile, if set, enables the PDS's pino logs (JSON lines) and appends
	// them to this file.
	LogFile string
}

// PDS is a running local PDS and its PLC directory, started by Start.
type PDS struct {
	// URL is the PDS base URL, http://127.0.0.1:PORT. (The PDS's own public
	// URL, in DID documents, is PublicURL.)
	URL string
	// PublicURL is the URL the PDS calls itself and writes into the DID
	// documents of its accounts (the atproto_pds service endpoint):
	// http://localhost:PORT.
	PublicURL string
	// ServiceDID is the PDS's own DID, did:web:localhost%3APORT: the audience
	// of its access tokens and of the service-auth tokens other PDSs mint for
	// it (com.atproto.server.getServiceAuth aud). It is fixed when the data
	// dir is created. Nothing resolves it.
	ServiceDID string
	// PLCURL is the PLC directory URL, http://localhost:PORT (a hostname, not
	// an IP: the PDS refuses to resolve DIDs through an IP host). PDSs
	// started with Options.SharePLC have the same PLCURL.
	PLCURL string
	// AdminPassword is the password for admin endpoints (basic auth as user
	// "admin").
	AdminPassword string
	// DataDir is the PDS data directory.
	DataDir string

	opts    Options
	dir     string // e2e/pds
	port    int
	ownData bool
	plc     *plcDir

	mu      sync.Mutex
	pds     *proc
	stopped bool
}

// ready is the JSON line plc.mjs and start.mjs print on stdout when ready.
type ready struct {
	PDS           string `json:"pds"`
	PublicURL     string `json:"publicUrl"`
	ServiceDID    string `json:"serviceDid"`
	PLC           string `json:"plc"`
	AdminPassword string `json:"adminPassword"`
	DataDir       string `json:"dataDir"`
	PID           int    `json:"pid"`
	Restarted     bool   `json:"restarted"`
	StartupMs     int64  `json:"startupMs"`
	Subscription  struct {
		MaxBuffer           int   `json:"maxBuffer"`
		RepoBackfillLimitMs int64 `json:"repoBackfillLimitMs"`
	} `json:"subscription"`
}

// Start runs Setup, then starts an in-memory PLC directory (unless
// opts.SharePLC names a PDS whose PLC to use) and the PDS, all bound to
// 127.0.0.1, and returns once they are serving. ctx bounds the startup only
// (DefaultStartTimeout when it has no deadline); call Stop to end the
// processes. They also exit on their own when this process dies.
func Start(ctx context.Context, opts Options) (*PDS, error) {
	if err := Setup(ctx); err != nil {
		return nil, err
	}
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	p := &PDS{opts: opts, dir: dir, DataDir: opts.DataDir}
	newPLC := opts.SharePLC == nil
	if newPLC {
		if p.plc, err = newPLCDir(); err != nil {
			return nil, fmt.Errorf("localpds: start plc: %w", err)
		}
	} else {
		p.plc = opts.SharePLC.plc
		if err := p.plc.join(); err != nil {
			return nil, fmt.Errorf("localpds: start: share the PLC of %s: %w", opts.SharePLC.URL, err)
		}
	}
	p.PLCURL = p.plc.url
	// fail undoes what Start did so far.
	fail := func(what string, err error) (*PDS, error) {
		if p.pds != nil {
			_ = p.pds.stop(stopGrace)
		}
		_ = p.cleanup()
		_ = p.plc.leave()
		return nil, fmt.Errorf("localpds: %s: %w", what, err)
	}
	if p.DataDir == "" {
		// Inside the PLC's root, which plc.mjs removes when it exits, even
		// if this process is killed.
		d, err := os.MkdirTemp(p.plc.root, "pds-")
		if err != nil {
			return fail("start: data dir", err)
		}
		p.DataDir, p.ownData = d, true
	} else if err := os.MkdirAll(p.DataDir, 0o755); err != nil {
		return fail("start: data dir", err)
	}

	ctx, cancel := startContext(ctx)
	defer cancel()
	if !newPLC {
		if err := p.startPDS(ctx, 0); err != nil {
			return fail("start pds", err)
		}
		return p, nil
	}
	// Start the PLC and the PDS side by side: the PDS only talks to the PLC
	// when accounts are created or resolved, and node startup (module
	// loading, about 1.5 s for the PDS) dominates.
	plcErr := make(chan error, 1)
	go func() { plcErr <- p.plc.start(ctx, dir, opts.Stderr) }()
	pdsErr := p.startPDS(ctx, 0)
	if err := <-plcErr; err != nil {
		return fail("start plc", err)
	}
	if pdsErr != nil {
		return fail("start pds", pdsErr)
	}
	return p, nil
}

// freePort returns a TCP port that is free on 127.0.0.1 right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startContext applies DefaultStartTimeout when ctx has no deadline.
func startContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultStartTimeout)
}

// startPDS starts start.mjs on port (0: the one recorded in the data dir, or
// a free one). The caller holds p.mu or has not published p yet.
func (p *PDS) startPDS(ctx context.Context, port int) error {
	env := []string{
		"PDS_DATA_DIR=" + p.DataDir,
		"PLC_URL=" + p.PLCURL,
	}
	if port != 0 {
		env = append(env, "PDS_PORT="+strconv.Itoa(port))
	}
	if p.opts.BackfillLimit > 0 {
		env = append(env, "PDS_REPO_BACKFILL_LIMIT_MS="+strconv.FormatInt(p.opts.BackfillLimit.Milliseconds(), 10))
	}
	if p.opts.MaxSubscriptionBuffer > 0 {
		env = append(env, "PDS_MAX_SUBSCRIPTION_BUFFER="+strconv.Itoa(p.opts.MaxSubscriptionBuffer))
	}
	if p.opts.LogFile != "" {
		env = append(env, "LOG_ENABLED=true", "LOG_DESTINATION="+p.opts.LogFile)
	}
	// The port of a PDS that was just stopped can take a moment to free up.
	for attempt := 0; ; attempt++ {
		proc, r, err := startNode(ctx, p.dir, "start.mjs", "pds", env, p.opts.Stderr)
		if err != nil {
			if port != 0 && attempt < 20 && strings.Contains(err.Error(), "EADDRINUSE") {
				select {
				case <-time.After(250 * time.Millisecond):
					continue
				case <-ctx.Done():
				}
			}
			return err
		}
		p.pds = proc
		if p.URL == "" { // first start; a restart must come back unchanged
			p.URL, p.PublicURL, p.ServiceDID, p.AdminPassword = r.PDS, r.PublicURL, r.ServiceDID, r.AdminPassword
			p.port, err = portOf(r.PDS)
			if err == nil && (r.PublicURL == "" || r.ServiceDID == "") {
				err = fmt.Errorf("ready line without publicUrl or serviceDid (old start.mjs?)")
			}
		} else if r.PDS != p.URL || r.AdminPassword != p.AdminPassword || r.ServiceDID != p.ServiceDID {
			err = fmt.Errorf("restarted PDS is %s (admin password %q, service DID %s), want %s (%q, %s)",
				r.PDS, r.AdminPassword, r.ServiceDID, p.URL, p.AdminPassword, p.ServiceDID)
		}
		if err == nil {
			err = p.checkConfig(r)
		}
		if err != nil {
			_ = proc.stop(stopGrace)
			return err
		}
		return nil
	}
}

// checkConfig checks that the PDS applied the options.
func (p *PDS) checkConfig(r ready) error {
	if ms := p.opts.BackfillLimit.Milliseconds(); ms > 0 && r.Subscription.RepoBackfillLimitMs != ms {
		return fmt.Errorf("PDS has repoBackfillLimitMs %d, want %d", r.Subscription.RepoBackfillLimitMs, ms)
	}
	if n := p.opts.MaxSubscriptionBuffer; n > 0 && r.Subscription.MaxBuffer != n {
		return fmt.Errorf("PDS has maxSubscriptionBuffer %d, want %d", r.Subscription.MaxBuffer, n)
	}
	return nil
}

// portOf returns the port of a http://host:port URL.
func portOf(u string) (int, error) {
	i := strings.LastIndexByte(u, ':')
	port, err := strconv.Atoi(strings.TrimSuffix(u[i+1:], "/"))
	if i < 0 || err != nil {
		return 0, fmt.Errorf("bad URL %q in ready line", u)
	}
	return port, nil
}

// Client returns an XRPC client for this PDS.
func (p *PDS) Client() *Client {
	return NewClient(p.URL)
}

// SubscribeReposURL returns the firehose (com.atproto.sync.subscribeRepos)
// WebSocket URL. A cursor < 0 means live events only; cursor N replays every
// event with seq > N (0 replays everything still in the backfill window).
func (p *PDS) SubscribeReposURL(cursor int64) string {
	u := "ws" + strings.TrimPrefix(p.URL, "http") + "/xrpc/com.atproto.sync.subscribeRepos"
	if cursor >= 0 {
		u += "?cursor=" + strconv.FormatInt(cursor, 10)
	}
	return u
}

// Stop stops the PDS (SIGTERM, then SIGKILL after 10 s), removes the data
// directory if Start created it, and stops the PLC if no other PDS shares it
// (Options.SharePLC): the last PDS on a PLC to stop takes the PLC down. It is
// safe to call more than once.
func (p *PDS) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return nil
	}
	p.stopped = true
	var errs []error
	if p.pds != nil {
		errs = append(errs, p.pds.stop(stopGrace))
	}
	errs = append(errs, p.cleanup(), p.plc.leave())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("localpds: stop: %w", err)
	}
	return nil
}

// cleanup removes the data dir if Start created it.
func (p *PDS) cleanup() error {
	if !p.ownData {
		return nil
	}
	return os.RemoveAll(p.DataDir)
}

// Restart stops the PDS process (SIGTERM; it may already be dead after Kill)
// and starts it again on the same port and data directory. The PLC keeps
// running, so accounts, sessions, repos and firehose seqs carry over.
func (p *PDS) Restart(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return errors.New("localpds: restart: PDS was stopped")
	}
	if err := p.pds.stop(stopGrace); err != nil {
		return fmt.Errorf("localpds: restart: stop: %w", err)
	}
	ctx, cancel := startContext(ctx)
	defer cancel()
	if err := p.startPDS(ctx, p.port); err != nil {
		return fmt.Errorf("localpds: restart: %w", err)
	}
	return nil
}

// Kill sends SIGKILL to the PDS process (not the PLC) and waits for it to
// exit, to simulate a crash. Restart brings it back; Stop releases the rest.
func (p *PDS) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pds != nil {
		p.pds.kill()
	}
}

// PID returns the process id of the current PDS process.
func (p *PDS) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pds.cmd.Process.Pid
}

// proc is a running node process.
type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited
	waitErr error
}

// envKeys are removed from the inherited environment: the harness sets them.
var envKeys = []string{
	"PDS_PORT=", "PLC_PORT=", "PLC_URL=", "PLC_CLEANUP_DIR=", "PDS_DATA_DIR=", "PDS_ADMIN_PASSWORD=",
	"PDS_REPO_BACKFILL_LIMIT_MS=", "PDS_MAX_SUBSCRIPTION_BUFFER=",
	"LOG_ENABLED=", "LOG_DESTINATION=", "NODE_OPTIONS=", "LOCAL_PDS_PARENT_PID=",
}

// startNode runs `node script` in dir and waits for its JSON ready line,
// which must have a non-empty key field ("pds" or "plc").
func startNode(ctx context.Context, dir, script, key string, env []string, stderr io.Writer) (*proc, ready, error) {
	bin := nodeBin(dir)
	if _, err := os.Stat(bin); err != nil {
		return nil, ready{}, fmt.Errorf("node 22 not installed (run localpds.Setup or %s/setup.sh): %w", dir, err)
	}
	if stderr == nil {
		stderr = io.Discard
	}
	errTail := &tailBuffer{max: 8 << 10}
	readyc := make(chan ready, 1)
	out := &lineWriter{fn: func(line []byte) {
		var r ready
		var m map[string]json.RawMessage
		if json.Unmarshal(line, &m) == nil && m[key] != nil && json.Unmarshal(line, &r) == nil {
			select {
			case readyc <- r:
				return
			default:
			}
		}
		_, _ = stderr.Write(append(line, '\n'))
	}}

	cmd := exec.Command(bin, script)
	cmd.Dir = dir
	cmd.Env = append(filterEnv(os.Environ()), env...)
	cmd.Env = append(cmd.Env, "LOCAL_PDS_PARENT_PID="+strconv.Itoa(os.Getpid()))
	cmd.Stdout = out
	cmd.Stderr = io.MultiWriter(stderr, errTail)
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, ready{}, fmt.Errorf("%s: %w", script, err)
	}
	p := &proc{name: script, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	select {
	case r := <-readyc:
		return p, r, nil
	case <-p.done:
		return nil, ready{}, fmt.Errorf("%s exited before it was ready (%w): %s", script, p.waitErr, errTail.String())
	case <-ctx.Done():
		p.kill()
		return nil, ready{}, fmt.Errorf("%s not ready: %w: %s", script, ctx.Err(), errTail.String())
	}
}

// filterEnv drops the variables in envKeys.
func filterEnv(env []string) []string {
	out := env[:0:0]
next:
	for _, kv := range env {
		for _, k := range envKeys {
			if strings.HasPrefix(kv, k) {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// stop sends SIGTERM and waits up to grace for the exit, then SIGKILLs. A
// clean exit, or an exit caused by our signals, is not an error.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.name, grace)
	}
	var ee *exec.ExitError
	if p.waitErr != nil && !errors.As(p.waitErr, &ee) {
		return fmt.Errorf("%s: %w", p.name, p.waitErr)
	}
	if ee != nil && !ee.Success() {
		if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			return fmt.Errorf("%s: %w", p.name, ee)
		}
	}
	return nil
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// lineWriter calls fn for every complete line written to it.
type lineWriter struct {
	mu  sync.Mutex
	buf []byte
	fn  func([]byte)
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := bytes.Clone(w.buf[:i])
		w.buf = w.buf[i+1:]
		w.fn(line)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
