package ident_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spaces-authz/spaces-authz/internal/ident"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
)

// docServer serves DID documents the way plc.directory does (GET /DID) and
// the way a did:web host does (GET /.well-known/did.json), and counts the
// fetches of each DID.
type docServer struct {
	mu    sync.Mutex
	keys  map[string]atcrypto.PublicKey
	pds   map[string]string
	gets  map[string]int
	webID string // the DID served at /.well-known/did.json
}

func newDocServer() *docServer {
	return &docServer{keys: map[string]atcrypto.PublicKey{}, pds: map[string]string{}, gets: map[string]int{}}
}

func (s *docServer) set(did string, key atcrypto.PublicKey, pds string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[did], s.pds[did] = key, pds
}

func (s *docServer) fetches(did string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[did]
}

func (s *docServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	did := strings.TrimPrefix(r.URL.Path, "/")
	if r.URL.Path == "/.well-known/did.json" {
		did = s.webID
	}
	s.gets[did]++
	key, ok := s.keys[did]
	if !ok {
		http.Error(w, `{"message":"DID not registered"}`, http.StatusNotFound)
		return
	}
	doc := map[string]any{
		"@context": []string{"https://www.w3.org/ns/did/v1"},
		"id":       did,
		"verificationMethod": []map[string]any{{
			"id": did + "#atproto", "type": "Multikey", "controller": did, "publicKeyMultibase": key.Multibase(),
		}},
		"service": []map[string]any{{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": s.pds[did]}},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(doc)
}

func newKey(t *testing.T) atcrypto.PublicKey {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func plcDirectory(t *testing.T, capacity int) (*ident.Directory, *docServer, *prometheus.Registry) {
	t.Helper()
	s := newDocServer()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	reg := prometheus.NewRegistry()
	d, err := ident.New(ident.Config{PLCURL: srv.URL, HTTP: srv.Client(), Capacity: capacity, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return d, s, reg
}

const (
	alice = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
	bob   = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
	carol = "did:plc:cccccccccccccccccccccccc"
)

func TestCacheHitAndHelpers(t *testing.T) {
	t.Parallel()
	d, s, reg := plcDirectory(t, 10)
	key := newKey(t)
	s.set(alice, key, "https://pds.example.com")
	ctx := t.Context()
	for range 3 {
		got, err := d.SigningKey(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		if got.DIDKey() != key.DIDKey() {
			t.Fatalf("key %s, want %s", got.DIDKey(), key.DIDKey())
		}
	}
	ep, err := d.PDSEndpoint(ctx, alice)
	if err != nil || ep != "https://pds.example.com" {
		t.Fatalf("PDSEndpoint = %q, %v", ep, err)
	}
	if n := s.fetches(alice); n != 1 {
		t.Fatalf("%d fetches of the DID document, want 1 (the rest from the cache)", n)
	}
	if hit, miss := metrictest.Value(t, reg, "spaces_authz_identity_lookups_total", "result", "hit"),
		metrictest.Value(t, reg, "spaces_authz_identity_lookups_total", "result", "miss"); hit != 3 || miss != 1 {
		t.Fatalf("hits %v misses %v, want 3 and 1", hit, miss)
	}
	if probs, err := testutil.GatherAndLint(reg); err != nil || len(probs) > 0 {
		t.Fatalf("metric lint: %v %v", probs, err)
	}
}

func TestPurgeSeesARotatedKey(t *testing.T) {
	t.Parallel()
	d, s, reg := plcDirectory(t, 10)
	old, rotated := newKey(t), newKey(t)
	s.set(alice, old, "https://pds.example.com")
	ctx := t.Context()
	if _, err := d.SigningKey(ctx, alice); err != nil {
		t.Fatal(err)
	}
	s.set(alice, rotated, "https://pds.example.com")
	got, err := d.SigningKey(ctx, alice)
	if err != nil || got.DIDKey() != old.DIDKey() {
		t.Fatalf("before the purge: %v, %v; want the cached old key", got, err)
	}
	if err := d.PurgeDID(ctx, alice); err != nil {
		t.Fatal(err)
	}
	got, err = d.SigningKey(ctx, alice)
	if err != nil || got.DIDKey() != rotated.DIDKey() {
		t.Fatalf("after the purge: %v, %v; want the rotated key", got, err)
	}
	if n := s.fetches(alice); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	if v := metrictest.Value(t, reg, "spaces_authz_identity_purges_total"); v != 1 {
		t.Fatalf("purges %v, want 1", v)
	}
}

func TestCacheIsBounded(t *testing.T) {
	t.Parallel()
	d, s, _ := plcDirectory(t, 2)
	for _, did := range []string{alice, bob, carol} {
		s.set(did, newKey(t), "https://pds.example.com")
	}
	ctx := t.Context()
	for _, did := range []string{alice, bob, carol, bob, carol} {
		if _, err := d.SigningKey(ctx, did); err != nil {
			t.Fatal(err)
		}
	}
	if a, b, c := s.fetches(alice), s.fetches(bob), s.fetches(carol); a != 1 || b != 1 || c != 1 {
		t.Fatalf("fetches %d %d %d, want 1 each (bob and carol cached)", a, b, c)
	}
	// Three DIDs in a cache of two: alice, the least recently used, was
	// evicted.
	if _, err := d.SigningKey(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if n := s.fetches(alice); n != 2 {
		t.Fatalf("alice fetched %d times, want 2 (evicted by the bound)", n)
	}
}

func TestUnknownDIDIsAClearError(t *testing.T) {
	t.Parallel()
	d, s, reg := plcDirectory(t, 10)
	ctx := t.Context()
	_, err := d.SigningKey(ctx, bob)
	if !errors.Is(err, ident.ErrDIDNotFound) || !strings.Contains(err.Error(), bob) {
		t.Fatalf("err = %v, want ErrDIDNotFound naming the DID", err)
	}
	// The failure is cached for ErrTTL: a second lookup costs no fetch.
	if _, err := d.SigningKey(ctx, bob); !errors.Is(err, ident.ErrDIDNotFound) {
		t.Fatalf("second lookup: %v", err)
	}
	if n := s.fetches(bob); n != 1 {
		t.Fatalf("%d fetches, want 1 (the failure is cached)", n)
	}
	if v := metrictest.Value(t, reg, "spaces_authz_identity_lookups_total", "result", "error"); v != 2 {
		t.Fatalf("errors %v, want 2", v)
	}
	if _, err := d.SigningKey(ctx, "not-a-did"); err == nil {
		t.Fatal("a malformed DID resolved")
	}
	if _, err := ident.New(ident.Config{Capacity: -1}); err == nil || !strings.Contains(err.Error(), "Capacity") {
		t.Fatalf("negative capacity: %v", err)
	}
}

func TestNoPDSIsAClearError(t *testing.T) {
	t.Parallel()
	d, s, _ := plcDirectory(t, 10)
	s.set(alice, newKey(t), "")
	if _, err := d.PDSEndpoint(t.Context(), alice); !errors.Is(err, ident.ErrNoPDS) {
		t.Fatalf("err = %v, want ErrNoPDS", err)
	}
}

// TestDIDWeb: indigo fetches did:web documents from https://HOST/.well-known/did.json
// only (no http, no port): the test serves TLS and dials its server for any host.
func TestDIDWeb(t *testing.T) {
	t.Parallel()
	s := newDocServer()
	const web = "did:web:example.com"
	s.webID = web
	key := newKey(t)
	s.set(web, key, "https://pds.example.com")
	srv := httptest.NewTLSServer(s)
	t.Cleanup(srv.Close)
	tr := srv.Client().Transport.(*http.Transport).Clone()
	addr := srv.Listener.Addr().String()
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	tr.TLSClientConfig = tr.TLSClientConfig.Clone()
	tr.TLSClientConfig.ServerName = "example.com" // the httptest certificate names example.com
	d, err := ident.New(ident.Config{PLCURL: "http://127.0.0.1:1", HTTP: &http.Client{Transport: tr}, AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.SigningKey(t.Context(), web)
	if err != nil {
		t.Fatal(err)
	}
	if got.DIDKey() != key.DIDKey() {
		t.Fatal("did:web resolved to another key")
	}
	id, err := d.Lookup(t.Context(), syntax.DID(web).AtIdentifier())
	if err != nil || id.DID.String() != web {
		t.Fatalf("Lookup: %v, %v", id, err)
	}
	if n := s.fetches(web); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

// TestDIDWebRefusesPrivateAddresses: a did:web host is named by its
// account (and by any caller of resyncAccount, before its token is
// checked); its name may resolve to an address inside the consumer's
// network. Without AllowPrivate the fetch is refused at the dial (here
// every name "resolves" to 127.0.0.1). Before the fix the document was
// fetched from the loopback server.
func TestDIDWebRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	s := newDocServer()
	const web = "did:web:example.com"
	s.webID = web
	s.set(web, newKey(t), "https://pds.example.com")
	srv := httptest.NewTLSServer(s)
	t.Cleanup(srv.Close)
	tr := srv.Client().Transport.(*http.Transport).Clone()
	addr := srv.Listener.Addr().String()
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	tr.TLSClientConfig = tr.TLSClientConfig.Clone()
	tr.TLSClientConfig.ServerName = "example.com"
	d, err := ident.New(ident.Config{PLCURL: "http://127.0.0.1:1", HTTP: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SigningKey(t.Context(), web); err == nil {
		t.Fatal("a did:web document was fetched from a loopback address")
	}
	if n := s.fetches(web); n != 0 {
		t.Fatalf("%d fetches reached the loopback server, want 0", n)
	}
}

// TestDocumentSizeBounded: a DID document host (a did:web one is anyone's)
// answering with an endless body must not be read to the end: indigo reads
// the whole body into memory. Before the fix all 64 MiB were read.
func TestDocumentSizeBounded(t *testing.T) {
	t.Parallel()
	var written atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		chunk := []byte(`{"id":"` + strings.Repeat(" ", 64<<10))
		for range 1024 { // 64 MiB
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	d, err := ident.New(ident.Config{PLCURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SigningKey(t.Context(), "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"); err == nil {
		t.Fatal("an endless document resolved")
	}
	if n := written.Load(); n > 16<<20 {
		t.Fatalf("%d bytes of the document were read, want it cut off near ident.MaxDocumentBytes", n)
	}
}
