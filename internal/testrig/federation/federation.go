package federation

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/relaytest"
)

// Stack is a running federation of a test.
type Stack struct {
	// PLCURL is the PLC directory both PDSs and the relay resolve DIDs with.
	PLCURL string
	// A and B are the two PDSs; B shares A's PLC.
	A, B *localpds.PDS
	// Relay is subscribed to A and B.
	Relay *relaytest.Relay
}

// Start starts PDS A (and the PLC), PDS B on the same PLC, and a relay
// subscribed to both. It fails the test if any of them does not start.
func Start(t testing.TB) *Stack {
	t.Helper()
	s, err := Launch(context.Background(), Options{RelayDir: t.TempDir(),
		RelayLog: filepath.Join(t.TempDir(), "relay.log")})
	if err != nil {
		t.Fatalf("federation: %v", err)
	}
	t.Cleanup(func() { _ = s.A.Stop() })
	t.Cleanup(func() { _ = s.B.Stop() })
	return &Stack{PLCURL: s.PLCURL, A: s.A, B: s.B, Relay: relaytest.Adopt(t, s.Relay)}
}

// Options configures Launch.
type Options struct {
	// RelayDir holds the relay's database and persister (required).
	RelayDir string
	// RelayLog is the relay's log file. Empty: relay.log in RelayDir.
	RelayLog string
	// LogDir, if set, receives the PDSs' logs, pds-a.log and pds-b.log.
	LogDir string
}

// Servers is a federation outside a test (cmd/localstack's federated
// stack): the same processes as Stack, which the caller stops (Stop).
type Servers struct {
	PLCURL string
	A, B   *localpds.PDS
	Relay  *relaytest.Server
}

// Launch starts PDS A (and the PLC), PDS B on the same PLC, and a relay
// subscribed to both, and returns once the relay is subscribed to both. On
// an error it stops what it started.
func Launch(ctx context.Context, opts Options) (*Servers, error) {
	logFile := func(name string) string {
		if opts.LogDir == "" {
			return ""
		}
		return filepath.Join(opts.LogDir, name)
	}
	a, err := localpds.Start(ctx, localpds.Options{LogFile: logFile("pds-a.log")})
	if err != nil {
		return nil, fmt.Errorf("PDS A: %w", err)
	}
	s := &Servers{PLCURL: a.PLCURL, A: a}
	b, err := localpds.Start(ctx, localpds.Options{SharePLC: a, LogFile: logFile("pds-b.log")})
	if err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("PDS B: %w", err)
	}
	s.B = b
	hosts := make([]string, 2)
	for i, p := range []*localpds.PDS{a, b} {
		if hosts[i], err = HostOf(p); err != nil {
			_ = s.Stop()
			return nil, err
		}
	}
	s.Relay, err = relaytest.Launch(relaytest.Config{PLCURL: a.PLCURL, Hosts: hosts,
		DataDir: opts.RelayDir, LogPath: opts.RelayLog})
	if err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop stops the relay, then B, then A (and the PLC with the last of them).
func (s *Servers) Stop() error {
	var errs []error
	if s.Relay != nil {
		errs = append(errs, s.Relay.Stop())
	}
	for _, p := range []*localpds.PDS{s.B, s.A} {
		if p != nil {
			errs = append(errs, p.Stop())
		}
	}
	return errors.Join(errs...)
}

// Host is the relay hostname of a PDS, "localhost:PORT": the host of its
// public URL, which the DID documents of its accounts name, so that the
// relay accepts their events from it.
func Host(t testing.TB, p *localpds.PDS) string {
	t.Helper()
	h, err := HostOf(p)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// HostOf is Host outside a test.
func HostOf(p *localpds.PDS) (string, error) {
	u, err := url.Parse(p.PublicURL)
	if err != nil {
		return "", fmt.Errorf("federation: PDS public URL %q: %w", p.PublicURL, err)
	}
	if u.Hostname() != "localhost" || u.Port() == "" {
		return "", fmt.Errorf("federation: PDS public URL %q is not http://localhost:PORT", p.PublicURL)
	}
	return fmt.Sprintf("localhost:%s", u.Port()), nil
}
