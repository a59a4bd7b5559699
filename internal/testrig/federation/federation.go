package federation

import (
	"context"
	"fmt"
	"net/url"
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
	ctx := context.Background()
	a, err := localpds.Start(ctx, localpds.Options{})
	if err != nil {
		t.Fatalf("federation: PDS A: %v", err)
	}
	t.Cleanup(func() { _ = a.Stop() })
	b, err := localpds.Start(ctx, localpds.Options{SharePLC: a})
	if err != nil {
		t.Fatalf("federation: PDS B: %v", err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	s := &Stack{PLCURL: a.PLCURL, A: a, B: b}
	s.Relay = relaytest.Start(t, relaytest.Config{PLCURL: a.PLCURL, Hosts: []string{Host(t, a), Host(t, b)}})
	return s
}

// Host is the relay hostname of a PDS, "localhost:PORT": the host of its
// public URL, which the DID documents of its accounts name, so that the
// relay accepts their events from it.
func Host(t testing.TB, p *localpds.PDS) string {
	t.Helper()
	u, err := url.Parse(p.PublicURL)
	if err != nil || u.Hostname() != "localhost" || u.Port() == "" {
		t.Fatalf("federation: PDS public URL %q is not http://localhost:PORT (%v)", p.PublicURL, err)
	}
	return fmt.Sprintf("localhost:%s", u.Port())
}
