// Package pgtest runs a throwaway PostgreSQL cluster for tests: initdb in a
// temporary directory, a postmaster on a free loopback port and a unix
// socket in that directory, with the settings SpiceDB documents for its
// postgres datastore (track_commit_timestamp=on, which Watch needs). It uses
// the OS's PostgreSQL (15 or later; the test command installs Debian's
// package when it is absent). Nothing here fakes PostgreSQL.
//
// PostgreSQL refuses to run as root, so under root the cluster runs as the
// `postgres` user the Debian package creates (or `nobody`).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
)

// MinMajor is the oldest PostgreSQL major version used (SpiceDB recommends
// 15 or later for its postgres datastore).
const MinMajor = 15

// BinEnv names a directory holding initdb and postgres, overriding the
// search.
const BinEnv = "PG_BIN"

// Options of a cluster.
type Options struct {
	// Durable keeps PostgreSQL's defaults (fsync, full page writes). Off,
	// the cluster trades durability across an OS crash for speed, which a
	// test that only kills processes does not need; a killed postmaster
	// still loses no acknowledged commit. Benchmarks set it.
	Durable bool
	// Settings are extra `-c name=value` settings.
	Settings map[string]string
}

// Cluster is a running PostgreSQL cluster of a test.
type Cluster struct {
	// Port on 127.0.0.1.
	Port int
	dir  string
	bin  string
	cred *syscall.Credential
	opts Options

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	log    *os.File
}

// BinDir finds PostgreSQL's server binaries: $PG_BIN, the newest
// /usr/lib/postgresql/<major>/bin, or initdb on PATH.
func BinDir() (string, error) {
	if d := os.Getenv(BinEnv); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
	for _, d := range dirs {
		if major(d) >= MinMajor {
			if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
				return d, nil
			}
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("pgtest: PostgreSQL %d or later not found (install Debian's postgresql package, or set %s)",
		MinMajor, BinEnv)
}

func major(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Start creates and starts a cluster in a fresh temporary directory. Stop
// (or Remove) ends it; the postmaster also dies with the test process.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c := &Cluster{dir: dir, bin: bin, opts: o}
	if os.Geteuid() == 0 {
		if c.cred, err = unprivileged(); err != nil {
			return nil, err
		}
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	init := c.command("initdb", "-D", c.dataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	if out, err := init.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	if c.Port, err = freePort(); err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// unprivileged is the user a root process runs PostgreSQL as.
func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("pgtest: running as root and neither user postgres nor nobody exists")
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Start starts the postmaster of a stopped cluster (the data stays), and
// waits until it accepts connections.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return errors.New("pgtest: already running")
	}
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(c.Port),
		"unix_socket_directories": c.dir,
		"track_commit_timestamp":  "on",
		"max_connections":         "200",
		"shared_buffers":          "128MB",
		"log_min_messages":        "warning",
	}
	if !c.opts.Durable {
		// Commits still reach the OS before they are acknowledged
		// (synchronous_commit stays on), so killing PostgreSQL loses
		// nothing; only an OS crash could.
		settings["fsync"] = "off"
		settings["full_page_writes"] = "off"
	}
	for k, v := range c.opts.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := []string{"-D", c.dataDir()}
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}
	logf, err := os.OpenFile(filepath.Join(c.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	cmd := c.command("postgres", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	c.cmd, c.log, c.exited = cmd, logf, exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := c.ping(ctx); err == nil {
			return nil
		}
		select {
		case <-exited:
			c.cmd = nil
			return fmt.Errorf("pgtest: postgres exited at start:\n%s", c.Log())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: postgres not ready after 60s:\n%s", c.Log())
		}
	}
}

func (c *Cluster) ping(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port),
		"-U", "postgres")
	return cmd.Run()
}

// Stop stops the postmaster: immediately (SIGQUIT: no checkpoint, crash
// recovery at the next start) when immediate, else a fast shutdown. The
// data directory stays for Start.
func (c *Cluster) Stop(immediate bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	sig := syscall.SIGINT
	if immediate {
		sig = syscall.SIGQUIT
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	// Wait until the port is free again, so that Start can bind it.
	for i := 0; i < 200; i++ {
		if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Port)); err != nil {
			break
		} else {
			conn.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.cmd = nil
	if c.log != nil {
		c.log.Close()
		c.log = nil
	}
}

// Remove stops the cluster and deletes its directory.
func (c *Cluster) Remove() {
	c.Stop(true)
	_ = os.RemoveAll(c.dir)
}

// CreateDB creates a database and returns its connection URI.
func (c *Cluster) CreateDB(ctx context.Context, name string) (string, error) {
	if !validName(name) {
		return "", fmt.Errorf("pgtest: database name %q: use [a-z0-9_]", name)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "createdb"), "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "postgres", name)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("pgtest: createdb %s: %w\n%s", name, err, out)
	}
	return c.URI(name), nil
}

// URI is a connection URI for database name.
func (c *Cluster) URI(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, name)
}

// Log returns the server log so far.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
	if len(b) > 64<<10 {
		b = b[len(b)-64<<10:]
	}
	return string(b)
}

func validName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == ""
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var (
	sharedOnce sync.Once
	shared     *Cluster
	sharedErr  error
	dbSeq      atomic.Int64
)

// Shared returns a cluster shared by every test of the process (started on
// first use, gone with the process); give each test its own database.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = Start(context.Background(), Options{}) })
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

// SpiceDB is the helper every test that wants SpiceDB on PostgreSQL uses:
// a fresh database on the shared cluster, `spicedb datastore migrate head`,
// and `spicedb serve --datastore-engine postgres` on it, stopped with the
// test.
func SpiceDB(t testing.TB) *spicedbtest.Server {
	t.Helper()
	s, _ := SpiceDBOn(t, Shared(t))
	return s
}

// SpiceDBOn is SpiceDB on a given cluster; it also returns the database URI
// (to restart SpiceDB on the same data).
func SpiceDBOn(t testing.TB, c *Cluster) (*spicedbtest.Server, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	uri, err := c.CreateDB(ctx, fmt.Sprintf("spicedb_%d_%d", os.Getpid(), dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := spicedbtest.Migrate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	s, err := spicedbtest.StartServe(ctx, spicedbtest.ServeOptions{PostgresURI: uri})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s, uri
}
