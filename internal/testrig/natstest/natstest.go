// Package natstest runs a real NATS server with JetStream for tests:
// in-process (nats-server's own code, on a random loopback port) or the
// nats-server binary the deps script installs (for the e2e suite, where it
// must be stopped and restarted).
package natstest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/spaces-authz/spaces-authz/internal/testrig/procs"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
)

// InProcess starts an in-process server with JetStream; it is shut down
// with the test.
func InProcess(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats: not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Binary is a nats-server process.
type Binary struct {
	URL      string
	port     int
	storeDir string
	logPath  string
	proc     *procs.Proc
}

// BinaryPath is the nats-server installed by scripts/deps.sh.
func BinaryPath() (string, error) {
	if p := os.Getenv("NATS_SERVER_BIN"); p != "" {
		return p, nil
	}
	cache, err := spicedbtest.CacheDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(cache, "bin", "nats-server")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("natstest: %s not found: run scripts/deps.sh (make deps)", p)
	}
	return p, nil
}

// StartBinary runs nats-server with JetStream on a free loopback port.
func StartBinary(dir string) (*Binary, error) {
	port, err := spicedbtest.FreePort()
	if err != nil {
		return nil, err
	}
	b := &Binary{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), port: port, storeDir: filepath.Join(dir, "jetstream"),
		logPath: filepath.Join(dir, "nats.log")}
	return b, b.Start()
}

// Start (re)starts the process on the same port and store.
func (b *Binary) Start() error {
	bin, err := BinaryPath()
	if err != nil {
		return err
	}
	p, err := procs.Start(bin, []string{"-a", "127.0.0.1", "-p", fmt.Sprint(b.port), "-js", "-sd", b.storeDir},
		nil, b.logPath, nil)
	if err != nil {
		return err
	}
	b.proc = p
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := netDial(b.port); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("natstest: nats-server not listening:\n%s", p.Output())
}

// Stop stops the process (SIGTERM, then SIGKILL).
func (b *Binary) Stop() { _ = b.proc.Stop(5 * time.Second) }
