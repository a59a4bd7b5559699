package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
)

const testAdminToken = "0123456789abcdef0123456789abcdef"

// TestRunHelpListsSecurityFlags: the new flags exist, with their
// CONSUMER_* variables, and the admin token has no plain flag.
func TestRunHelpListsSecurityFlags(t *testing.T) {
	t.Parallel()
	var f runFlags
	fs := f.flagSet("run")
	var out bytes.Buffer
	fs.SetOutput(&out)
	var ee *exitError
	if err := parse(fs, []string{"-h"}); !errors.As(err, &ee) || ee.code != 0 {
		t.Fatalf("-h: %v", err)
	}
	help := out.String()
	for _, want := range []string{"--admin-addr (CONSUMER_ADMIN_ADDR)", "--admin-token-file (CONSUMER_ADMIN_TOKEN_FILE)",
		"CONSUMER_ADMIN_TOKEN)", "--max-consistency-waiters (CONSUMER_MAX_CONSISTENCY_WAITERS)",
		"--spicedb-insecure-remote (CONSUMER_SPICEDB_INSECURE_REMOTE)"} {
		if !strings.Contains(help, want) {
			t.Errorf("run -h does not list %q", want)
		}
	}
	if fs.Lookup("admin-token") != nil {
		t.Error("the admin token is a plain flag: it would show in ps")
	}
}

// TestSpiceDBInsecureRemote: plaintext to a remote SpiceDB needs the
// explicit flag (or its variable).
func TestSpiceDBInsecureRemote(t *testing.T) {
	t.Setenv("CONSUMER_SPICEDB_TOKEN", "k")
	config := func(args ...string) error {
		var c common
		fs := flagSetOf(&c)
		if err := parse(fs, args); err != nil {
			return err
		}
		_, err := c.spiceConfig()
		return err
	}
	remote := []string{"--spicedb-endpoint", "spicedb:50051", "--spicedb-insecure"}
	if err := config(remote...); err == nil || !strings.Contains(err.Error(), "--spicedb-insecure-remote") {
		t.Errorf("plaintext to spicedb:50051: %v, want a refusal naming --spicedb-insecure-remote", err)
	}
	if err := config(append(remote, "--spicedb-insecure-remote")...); err != nil {
		t.Errorf("with --spicedb-insecure-remote: %v", err)
	}
	if err := config("--spicedb-endpoint", "127.0.0.1:50051", "--spicedb-insecure"); err != nil {
		t.Errorf("loopback: %v", err)
	}
	t.Setenv("CONSUMER_SPICEDB_INSECURE_REMOTE", "true")
	if err := config(remote...); err != nil {
		t.Errorf("with CONSUMER_SPICEDB_INSECURE_REMOTE=true: %v", err)
	}
}

// TestAdminTokenSources: CONSUMER_ADMIN_TOKEN or --admin-token-file (which
// wins); an unreadable or empty file, or a short token, is refused.
func TestAdminTokenSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(file, []byte(testAdminToken+"-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := (&adminFlags{}).token(); err != nil || tok != "" {
		t.Fatalf("nothing configured: %q %v", tok, err)
	}
	t.Setenv("CONSUMER_ADMIN_TOKEN", testAdminToken)
	if tok, err := (&adminFlags{}).token(); err != nil || tok != testAdminToken {
		t.Fatalf("from the environment: %q %v", tok, err)
	}
	if tok, err := (&adminFlags{tokenFile: file}).token(); err != nil || tok != testAdminToken+"-file" {
		t.Fatalf("from the file: %q %v", tok, err)
	}
	for _, bad := range []string{empty, filepath.Join(dir, "missing")} {
		if _, err := (&adminFlags{tokenFile: bad}).token(); err == nil || !strings.Contains(err.Error(), "--admin-token-file") {
			t.Errorf("%s: %v", bad, err)
		}
	}
	t.Setenv("CONSUMER_ADMIN_TOKEN", "short")
	f := runFlags{httpAddr: "127.0.0.1:0"}
	var ee *exitError
	if _, _, err := f.listeners(newAdminFake(), prometheus.NewRegistry(), testenv.Logger()); !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("a 5-byte admin token: %v, want a usage error", err)
	}
}

// TestAdminAddrSplitsListeners: with --admin-addr the main listener
// doesn't serve the admin API; the admin listener does, with the token.
func TestAdminAddrSplitsListeners(t *testing.T) {
	t.Setenv("CONSUMER_ADMIN_TOKEN", testAdminToken)
	src := newAdminFake()
	f := runFlags{httpAddr: "127.0.0.1:0", admin: adminFlags{addr: "127.0.0.1:0"}}
	servers, where, err := f.listeners(src, prometheus.NewRegistry(), testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for _, s := range servers {
		go func() { _ = s.Run(ctx) }()
	}
	if len(servers) != 2 || !strings.Contains(where, servers[1].Addr()) {
		t.Fatalf("%d listeners, admin %q", len(servers), where)
	}
	if err := resyncThroughDaemon(t.Context(), servers[0].Addr(), testAdminToken, []string{"did:plc:alice"}); err == nil {
		t.Error("the main listener served the admin API")
	}
	if err := resyncThroughDaemon(t.Context(), servers[1].Addr(), testAdminToken, []string{"did:plc:alice"}); err != nil {
		t.Errorf("the admin listener: %v", err)
	}
}

// adminFake is a daemon's consumer for the admin API.
type adminFake struct {
	mu       sync.Mutex
	resynced []string
}

func newAdminFake() *adminFake { return &adminFake{} }

func (f *adminFake) Snapshot() pipeline.Snapshot { return pipeline.Snapshot{Started: time.Now()} }
func (f *adminFake) WaitApplied(context.Context, string, string) (string, error) {
	return "", errors.New("not here")
}
func (f *adminFake) Resync(_ context.Context, dids []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resynced = append(f.resynced, dids...)
	return nil
}

func (f *adminFake) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.resynced)
}

// daemon serves the real admin API over src with token ("" disables it).
func daemon(t *testing.T, src httpapi.Source, token string) string {
	t.Helper()
	a, err := httpapi.New(httpapi.Config{Source: src, Gatherer: prometheus.NewRegistry(), AdminToken: token})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestReconcileFixSendsTheAdminToken: reconcile --fix's repair sends the
// token from CONSUMER_ADMIN_TOKEN or --admin-token-file, splits long lists
// under the daemon's cap, and explains a 401 or a 403.
func TestReconcileFixSendsTheAdminToken(t *testing.T) {
	dids := make([]string, 2*httpapi.MaxResyncDIDs+17)
	for i := range dids {
		dids[i] = fmt.Sprintf("did:plc:%024d", i)
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("not-the-daemon-token-at-all\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	src := newAdminFake()
	addr := daemon(t, src, testAdminToken)
	t.Setenv("CONSUMER_ADMIN_TOKEN", testAdminToken)
	if err := fixThrough(t.Context(), addr, "", dids); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	if src.count() != len(dids) {
		t.Fatalf("resynced %d of %d repos", src.count(), len(dids))
	}
	if err := fixThrough(t.Context(), addr, wrong, dids[:1]); err == nil || !strings.Contains(err.Error(), "refused the admin token") {
		t.Errorf("a wrong token: %v", err)
	}
	t.Setenv("CONSUMER_ADMIN_TOKEN", "")
	if err := fixThrough(t.Context(), addr, "", dids[:1]); err == nil || !strings.Contains(err.Error(), "CONSUMER_ADMIN_TOKEN") {
		t.Errorf("no token: %v", err)
	}
	off := daemon(t, newAdminFake(), "")
	if err := fixThrough(t.Context(), off, "", dids[:1]); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("a daemon without an admin token: %v", err)
	}
	if src.count() != len(dids) {
		t.Fatalf("resynced %d repos, want only the %d of the authorized call", src.count(), len(dids))
	}
}

func fixThrough(ctx context.Context, addr, tokenFile string, dids []string) error {
	return repair(ctx, common{}, adminFlags{addr: addr, tokenFile: tokenFile}, dids)
}

// TestNATSConnectErrorHidesCredentials: nats.Connect's error quotes the URL
// it could not parse, password included; the fan-out's error doesn't.
func TestNATSConnectErrorHidesCredentials(t *testing.T) {
	t.Parallel()
	n := natsFlags{url: "nats://svc:hunter2@127.0.0.1:notaport"}
	cfg := n.config(time.Hour)
	cfg.Source = "test"
	_, err := fanout.Connect(t.Context(), *cfg)
	if err == nil {
		t.Fatal("connected to a malformed URL")
	}
	if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("error %q", err)
	}
}

// TestReportHidesCredentials: what the process prints when a command
// fails (tail's connect error, say) has no URL credentials.
func TestReportHidesCredentials(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := errors.New(`connect nats://svc:hunter2@nats:4222: parse "nats://svc:hunter2@nats:notaport": invalid port`)
	if code := report(&out, "tail", err); code != 1 {
		t.Errorf("exit code %d", code)
	}
	if strings.Contains(out.String(), "hunter2") || !strings.Contains(out.String(), "nats:4222") {
		t.Errorf("printed %q", out.String())
	}
}

// TestRunLogsNoCredentials runs the daemon in-process against a fake PDS
// whose URL carries credentials: neither "consumer starting" nor
// "consumer running" logs them.
func TestRunLogsNoCredentials(t *testing.T) {
	e := testenv.New(t)
	pds := strings.Replace(e.PDS.URL(), "://", "://operator:hunter2@", 1)
	t.Setenv("CONSUMER_SPICEDB_TOKEN", e.Token)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w // the daemon's logger writes to os.Stderr
	defer func() { os.Stderr = stderr }()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- cmdRun(ctx, []string{"--pds-url", pds, "--spicedb-endpoint", e.SDB.Addr, "--spicedb-insecure",
			"--http-addr", "127.0.0.1:0", "--log-format", "json", "--name", "redact-test"})
	}()
	var logs bytes.Buffer
	running := make(chan struct{})
	var once sync.Once
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), `"consumer running"`) {
				once.Do(func() { close(running) })
			}
		}
	}()
	select {
	case <-running:
	case err := <-done:
		t.Fatalf("the daemon stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no \"consumer running\" within 30s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	os.Stderr = stderr
	_ = w.Close()
	<-read
	_, _ = io.Copy(io.Discard, r)
	out := logs.String()
	if strings.Contains(out, "hunter2") {
		t.Errorf("the logs hold the PDS password:\n%s", out)
	}
	for _, want := range []string{`"consumer starting"`, `"consumer running"`, "REDACTED@127.0.0.1"} {
		if !strings.Contains(out, want) {
			t.Errorf("the logs lack %s:\n%s", want, out)
		}
	}
}

// flagSetOf registers the common flags alone.
func flagSetOf(c *common) *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.register(fs, "text")
	return fs
}

// TestResyncAccountOnPublicListener: with --admin-addr the account's own
// resync (authenticated by its token, not the admin token) is on the
// public listener, not the admin one; --service-did turns it on.
func TestResyncAccountOnPublicListener(t *testing.T) {
	for _, c := range []struct {
		serviceDID string
		want       int // on the public listener
	}{{"did:web:authz.example.com", http.StatusUnauthorized}, {"", http.StatusNotImplemented}} {
		f := runFlags{httpAddr: "127.0.0.1:0", admin: adminFlags{addr: "127.0.0.1:0"}, serviceDID: c.serviceDID,
			common: common{plcURL: "http://127.0.0.1:1"}}
		servers, _, err := f.listeners(newAdminFake(), prometheus.NewRegistry(), testenv.Logger())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		for _, s := range servers {
			go func() { _ = s.Run(ctx) }()
		}
		for i, want := range []int{c.want, http.StatusNotFound} {
			resp, err := http.Post("http://"+servers[i].Addr()+httpapi.ResyncAccountPath, "application/json", nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("service DID %q, listener %d: %d, want %d", c.serviceDID, i, resp.StatusCode, want)
			}
		}
		cancel()
	}
}
