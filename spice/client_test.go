package spice_test

import (
	"net"
	"strings"
	"testing"

	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
)

// TestInsecureOnlyToLoopback: plaintext gRPC carries the preshared key in
// clear, so Validate (and Dial) accept it only for an endpoint that stays
// on the host, unless InsecureRemote says the operator means it.
func TestInsecureOnlyToLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		endpoint string
		remote   bool // InsecureRemote
		ok       bool
	}{
		{"127.0.0.1:50051", false, true},
		{"127.8.9.10:50051", false, true},
		{"[::1]:50051", false, true},
		{"::1", false, true},
		{"localhost:50051", false, true},
		{"LOCALHOST", false, true},
		{"unix:///run/spicedb.sock", false, true},
		{"unix:relative.sock", false, true},
		{"dns:///127.0.0.1:50051", false, true},
		{"dns:///localhost:50051", false, true},
		{"spicedb:50051", false, false},
		{"spicedb.spicedb.svc.cluster.local:50051", false, false},
		{"10.0.0.7:50051", false, false},
		{"0.0.0.0:50051", false, false},
		{"[2001:db8::1]:50051", false, false},
		{"localhost.example.com:50051", false, false},
		{"127.0.0.1.nip.io:50051", false, false},
		{"dns:///spicedb:50051", false, false},
		{"dns://8.8.8.8/spicedb:50051", false, false},
		{"dns://8.8.8.8", false, false},
		{"spicedb:50051", true, true},
		{"10.0.0.7:50051", true, true},
	} {
		cfg := spice.Config{Endpoint: tc.endpoint, Token: "k", Insecure: true, InsecureRemote: tc.remote}
		err := cfg.Validate()
		if tc.ok && err != nil {
			t.Errorf("%s (remote=%v): %v", tc.endpoint, tc.remote, err)
		}
		if !tc.ok {
			if err == nil {
				t.Errorf("%s: plaintext to a remote endpoint was accepted", tc.endpoint)
			} else if !strings.Contains(err.Error(), "--spicedb-insecure-remote") {
				t.Errorf("%s: the error does not name the flag: %v", tc.endpoint, err)
			}
			if _, err := spice.Dial(cfg); err == nil {
				t.Errorf("%s: Dial accepted it", tc.endpoint)
			}
		}
		// With TLS any endpoint is fine.
		tls := spice.Config{Endpoint: tc.endpoint, Token: "k"}
		if err := tls.Validate(); err != nil {
			t.Errorf("%s with TLS: %v", tc.endpoint, err)
		}
	}
}

// TestInsecureLocalhostReachesSpiceDB: "localhost" is accepted and works
// against a real SpiceDB.
func TestInsecureLocalhostReachesSpiceDB(t *testing.T) {
	e := testenv.New(t)
	_, port, err := net.SplitHostPort(e.SDB.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := spice.Dial(spice.Config{Endpoint: "localhost:" + port, Token: e.Token, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	schema, err := c.ReadSchema(t.Context())
	if err != nil || !strings.Contains(schema, "definition") {
		t.Fatalf("schema %q, %v", schema, err)
	}
}
