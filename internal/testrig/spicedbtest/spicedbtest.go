// Package spicedbtest runs a real SpiceDB for tests: it builds the pinned
// release once with `go install` into the project's cache directory
// (.cache/bin, or $SPICEDB_BIN) and starts `spicedb serve-testing` or
// `spicedb serve` on free loopback ports. Nothing here fakes SpiceDB.
package spicedbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
)

// Version is the SpiceDB release the project is tested against.
const Version = "v1.56.2"

// Module is what `go install` builds.
const Module = "github.com/authzed/spicedb/cmd/spicedb@" + Version

// BinEnv overrides the binary's location.
const BinEnv = "SPICEDB_BIN"

// RepoRoot finds the module root (the directory holding go.mod) above this
// source file or the working directory.
func RepoRoot() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, d := range starts {
		for ; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", errors.New("spicedbtest: go.mod not found")
}

// CacheDir is the project's cache directory (<repo>/.cache).
func CacheDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache"), nil
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of a spicedb binary of Version, building it the
// first time (about 3–5 minutes on 2 cores). Concurrent test processes wait
// on a file lock instead of building twice.
func Binary() (string, error) {
	binOnce.Do(func() { binPath, binErr = ensureBinary() })
	return binPath, binErr
}

func ensureBinary() (string, error) {
	if p := os.Getenv(BinEnv); p != "" {
		return p, checkVersion(p)
	}
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("spicedbtest: %w", err)
	}
	bin := filepath.Join(dir, "spicedb")
	if checkVersion(bin) == nil {
		return bin, nil
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".spicedb.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("spicedbtest: lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("spicedbtest: lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // released on close anyway
	if checkVersion(bin) == nil {
		return bin, nil
	}
	goBin := "go"
	fmt.Fprintf(os.Stderr, "spicedbtest: building %s into %s (once; a few minutes)\n", Module, dir)
	cmd := exec.Command(goBin, "install", Module)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("spicedbtest: go install %s: %w", Module, err)
	}
	return bin, checkVersion(bin)
}

func checkVersion(bin string) error {
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("spicedbtest: %s version: %w", bin, err)
	}
	if !strings.Contains(string(out), Version) {
		return fmt.Errorf("spicedbtest: %s is %q, want %s", bin, strings.TrimSpace(string(out)), Version)
	}
	return nil
}

// Server is a running SpiceDB process.
type Server struct {
	// Addr is the gRPC address (127.0.0.1:port), plaintext.
	Addr string
	// Key is the preshared key for `serve`; serve-testing accepts any token
	// and gives each its own datastore.
	Key string
	cmd *exec.Cmd
	out *lockedBuffer
}

// FreePort returns a free loopback port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartTesting runs `spicedb serve-testing` on loopback ports.
func StartTesting(ctx context.Context) (*Server, error) {
	p1, err := FreePort()
	if err != nil {
		return nil, err
	}
	p2, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", p1)
	return start(ctx, addr, "", "serve-testing", "--grpc-addr", addr,
		"--readonly-grpc-addr", fmt.Sprintf("127.0.0.1:%d", p2),
		"--http-enabled=false", "--readonly-http-enabled=false", "--skip-release-check", "--log-level", "warn")
}

// ServeOptions configure StartServe.
type ServeOptions struct {
	// Addr to listen on (default a free loopback port). Reuse the address
	// of a stopped server to restart SpiceDB in place.
	Addr string
	// Key is the preshared key (default random).
	Key string
	// PostgresURI selects the postgres datastore at this URI (migrated
	// already: Migrate); empty means the memory datastore.
	PostgresURI string
}

// Migrate runs `spicedb datastore migrate head` against a PostgreSQL
// database.
func Migrate(ctx context.Context, uri string) error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "datastore", "migrate", "head", "--datastore-engine", "postgres",
		"--datastore-conn-uri", uri, "--skip-release-check", "--log-level", "warn")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("spicedbtest: datastore migrate head: %w\n%s", err, out)
	}
	return nil
}

// StartServe runs `spicedb serve` with a preshared key, on the memory
// datastore (as the e2e suite and the local stack do by default) or on
// PostgreSQL (PostgresURI).
func StartServe(ctx context.Context, o ServeOptions) (*Server, error) {
	if o.Addr == "" {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		o.Addr = fmt.Sprintf("127.0.0.1:%d", p)
	}
	if o.Key == "" {
		o.Key = RandomToken()
	}
	mp, err := FreePort()
	if err != nil {
		return nil, err
	}
	datastore := []string{"--datastore-engine", "memory"}
	if o.PostgresURI != "" {
		// The revision quantization window is SpiceDB's default (5s): reads
		// at a ZedToken or fully consistent are unaffected by it.
		datastore = []string{"--datastore-engine", "postgres", "--datastore-conn-uri", o.PostgresURI}
	}
	args := append([]string{"serve", "--grpc-preshared-key", o.Key}, datastore...)
	return start(ctx, o.Addr, o.Key, append(args,
		"--grpc-addr", o.Addr, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mp), "--http-enabled=false",
		"--dispatch-cluster-enabled=false", "--telemetry-endpoint=", "--skip-release-check", "--log-level", "warn")...)
}

func start(ctx context.Context, addr, key string, args ...string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("spicedbtest: start: %w", err)
	}
	s := &Server{Addr: addr, Key: key, cmd: cmd, out: out}
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, fmt.Errorf("spicedbtest: %w; output:\n%s", err, out.String())
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := grpc_health_v1.NewHealthClient(conn)
	for {
		resp, err := hc.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: "authzed.api.v1.SchemaService"})
		if err == nil && resp.GetStatus() == grpc_health_v1.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready at %s: %w", s.Addr, errors.Join(err, ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop kills the process (SpiceDB's memory datastore is gone with it).
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// Output returns what the process printed.
func (s *Server) Output() string { return s.out.String() }

var (
	sharedOnce sync.Once
	shared     *Server
	sharedErr  error
)

// Shared returns a serve-testing server shared by every test of the
// process; give each test its own token (Token) for an isolated datastore.
// The process is killed when the test binary exits.
func Shared(t testing.TB) *Server {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = StartTesting(context.Background()) })
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

// RandomToken returns a fresh random token.
func RandomToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var _ io.Writer = (*lockedBuffer)(nil)
