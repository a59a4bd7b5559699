package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/auth"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
)

const (
	serviceDID = "did:web:authz.example.com"
	aliceDID   = "did:plc:alice234567abcdefghijklm"
	bobDID     = "did:plc:bob234567abcdefghijklmno"
)

// account is a DID and its signing key, published in the fake directory.
type account struct {
	did syntax.DID
	key atcrypto.PrivateKey
}

// accounts are alice (a K-256 key, as a PDS makes) and bob (P-256), in dir.
func accounts(t *testing.T, dir *identity.MockDirectory) (alice, bob account) {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	p, err := atcrypto.GeneratePrivateKeyP256()
	if err != nil {
		t.Fatal(err)
	}
	alice, bob = account{syntax.DID(aliceDID), k}, account{syntax.DID(bobDID), p}
	for _, a := range []account{alice, bob} {
		publish(t, dir, a.did, a.key)
	}
	return alice, bob
}

// publish makes key the atproto key of did's document in dir.
func publish(t *testing.T, dir *identity.MockDirectory, did syntax.DID, key atcrypto.PrivateKey) {
	t.Helper()
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	dir.Insert(identity.Identity{DID: did, Handle: syntax.HandleInvalid,
		Keys: map[string]identity.VerificationMethod{"atproto": {Type: "Multikey", PublicKeyMultibase: pub.Multibase()}}})
}

// token is a service-auth JWT of a for aud and lxm, valid for ttl
// (negative: expired that long ago).
func (a account) token(t *testing.T, aud, lxm string, ttl time.Duration) string {
	t.Helper()
	nsid := syntax.NSID(lxm)
	tok, err := auth.SignServiceAuth(a.did, aud, ttl, &nsid, a.key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (a account) good(t *testing.T) string {
	return a.token(t, serviceDID, httpapi.ResyncAccountNSID, time.Minute)
}

// xrpcAnswer is a resyncAccount answer.
type xrpcAnswer struct {
	status     int
	retryAfter string
	Error      string `json:"error"`
	Message    string `json:"message"`
	DID        string `json:"did"`
	Status     string `json:"status"`
}

func callResync(t *testing.T, base, tok, body string) xrpcAnswer {
	t.Helper()
	out, err := tryResync(t.Context(), base, tok, body)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tryResync is callResync for another goroutine than the test's.
func tryResync(ctx context.Context, base, tok, body string) (xrpcAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+httpapi.ResyncAccountPath, strings.NewReader(body))
	if err != nil {
		return xrpcAnswer{}, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return xrpcAnswer{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out xrpcAnswer
	if err := json.Unmarshal(b, &out); err != nil {
		return xrpcAnswer{}, fmt.Errorf("%d: body %q is not JSON: %w", resp.StatusCode, b, err)
	}
	out.status, out.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	return out, nil
}

// syncBuffer is a log sink the handlers write to concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// resyncServer serves the public handler of cfg (Source, Gatherer, Metrics,
// Logger, ServiceDID and Directory filled in when unset).
type resyncServer struct {
	url string
	src *fakeSource
	reg *prometheus.Registry
	log *syncBuffer
}

func newResyncServer(t *testing.T, cfg httpapi.Config) *resyncServer {
	t.Helper()
	s := &resyncServer{src: newFake(), reg: prometheus.NewRegistry(), log: &syncBuffer{}}
	cfg.Source, cfg.Gatherer, cfg.Metrics = s.src, s.reg, httpapi.NewMetrics(s.reg)
	cfg.Logger = slog.New(slog.NewTextHandler(s.log, nil))
	a, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.PublicHandler())
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *resyncServer) results(t *testing.T, result string) float64 {
	t.Helper()
	return metrictest.Value(t, s.reg, "spaces_authz_account_resync_requests_total", "result", result)
}

// TestResyncAccountOwnToken: an account's service-auth token for this
// consumer and method resyncs that account, with or without a body naming
// it, on the public listener.
func TestResyncAccountOwnToken(t *testing.T) {
	t.Parallel()
	dir := identity.NewMockDirectory()
	alice, bob := accounts(t, dir)
	s := newResyncServer(t, httpapi.Config{ServiceDID: serviceDID, Directory: dir})
	for _, c := range []struct {
		who  account
		body string
	}{{alice, ""}, {bob, `{"did": "` + bobDID + `"}`}, {alice, `{}`}} {
		got := callResync(t, s.url, c.who.good(t), c.body)
		if got.status != http.StatusOK || got.DID != c.who.did.String() || got.Status != "resynced" {
			t.Fatalf("%s body %q: %+v, want 200 resynced", c.who.did, c.body, got)
		}
	}
	if got := s.src.resyncs(); len(got) != 3 || len(got[0]) != 1 || got[0][0] != aliceDID || got[1][0] != bobDID ||
		got[2][0] != aliceDID {
		t.Fatalf("resyncs %v, want [[alice] [bob] [alice]]", got)
	}
	if n := s.results(t, "ok"); n != 3 {
		t.Errorf("ok counted %v, want 3", n)
	}
	problems, err := testutil.GatherAndLint(s.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

// TestResyncAccountRefusesBadTokens: no token, another key, expired, for
// another service, for another method, no lxm, garbage: 401 and no resync;
// a line per refusal that never holds the token.
func TestResyncAccountRefusesBadTokens(t *testing.T) {
	t.Parallel()
	dir := identity.NewMockDirectory()
	alice, _ := accounts(t, dir)
	other, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	impostor := account{did: alice.did, key: other} // alice's DID, not her key
	noLXM, err := auth.SignServiceAuth(alice.did, serviceDID, time.Minute, nil, alice.key)
	if err != nil {
		t.Fatal(err)
	}
	unknown := account{did: "did:plc:nobody4567abcdefghijklmn", key: other}
	s := newResyncServer(t, httpapi.Config{ServiceDID: serviceDID, Directory: dir})
	cases := []struct {
		name, tok, errName, says string
	}{
		{"missing", "", "AuthRequired", "Authorization"},
		{"wrong key", impostor.good(t), "InvalidToken", "signature"},
		{"expired", alice.token(t, serviceDID, httpapi.ResyncAccountNSID, -time.Minute), "InvalidToken", "expired"},
		{"aud of another service", alice.token(t, "did:web:other.example.com", httpapi.ResyncAccountNSID, time.Minute),
			"InvalidToken", "another service"},
		{"lxm of another method", alice.token(t, serviceDID, "com.atproto.repo.createRecord", time.Minute),
			"InvalidToken", "another method"},
		{"no lxm", noLXM, "InvalidToken", "another method"},
		{"unknown issuer", unknown.good(t), "InvalidToken", "issuer"},
		{"not a JWT", "not.a.jwt", "InvalidToken", "invalid"},
	}
	for _, c := range cases {
		got := callResync(t, s.url, c.tok, "")
		if got.status != http.StatusUnauthorized || got.Error != c.errName || !strings.Contains(got.Message, c.says) {
			t.Errorf("%s: %d %s %q, want 401 %s saying %q", c.name, got.status, got.Error, got.Message, c.errName, c.says)
		}
	}
	if got := s.src.resyncs(); len(got) != 0 {
		t.Fatalf("resynced %v on bad tokens", got)
	}
	if n := s.results(t, "invalid_token") + s.results(t, "auth_required"); n != float64(len(cases)) {
		t.Errorf("refusals counted %v, want %d", n, len(cases))
	}
	logs := s.log.String()
	if n := strings.Count(logs, "resyncAccount refused"); n != len(cases) {
		t.Errorf("%d refusal lines, want %d:\n%s", n, len(cases), logs)
	}
	for _, c := range cases {
		if c.tok != "" && strings.Contains(logs, strings.SplitN(c.tok, ".", 3)[len(strings.SplitN(c.tok, ".", 3))-1]) {
			t.Fatalf("%s: the log holds the token:\n%s", c.name, logs)
		}
	}
	// The same good token works: what was refused was each token's flaw.
	if got := callResync(t, s.url, alice.good(t), ""); got.status != http.StatusOK {
		t.Fatalf("good token after the bad ones: %+v", got)
	}
}

// TestResyncAccountOnlyItself: a valid token of bob with a body naming
// alice is 403 and resyncs nobody; a malformed body is 400.
func TestResyncAccountOnlyItself(t *testing.T) {
	t.Parallel()
	dir := identity.NewMockDirectory()
	_, bob := accounts(t, dir)
	s := newResyncServer(t, httpapi.Config{ServiceDID: serviceDID, Directory: dir})
	got := callResync(t, s.url, bob.good(t), `{"did": "`+aliceDID+`"}`)
	if got.status != http.StatusForbidden || got.Error != "Forbidden" || !strings.Contains(got.Message, "only itself") {
		t.Fatalf("bob naming alice: %+v, want 403 Forbidden", got)
	}
	for _, body := range []string{`{"did": "alice"}`, `[1]`, `{"did": 3}`} {
		if got := callResync(t, s.url, bob.good(t), body); got.status != http.StatusBadRequest || got.Error != "InvalidRequest" {
			t.Errorf("body %s: %+v, want 400 InvalidRequest", body, got)
		}
	}
	if got := s.src.resyncs(); len(got) != 0 {
		t.Fatalf("resynced %v", got)
	}
	if n := s.results(t, "forbidden"); n != 1 {
		t.Errorf("forbidden counted %v, want 1", n)
	}
	if logs := s.log.String(); !strings.Contains(logs, "did="+bobDID) || !strings.Contains(logs, "result=forbidden") {
		t.Errorf("the refusal line names neither the caller nor the reason:\n%s", logs)
	}
}

// TestResyncAccountRateLimited: past its burst an account gets 429 with a
// Retry-After, and resyncs nothing more; another account is not held back.
func TestResyncAccountRateLimited(t *testing.T) {
	t.Parallel()
	dir := identity.NewMockDirectory()
	alice, bob := accounts(t, dir)
	s := newResyncServer(t, httpapi.Config{ServiceDID: serviceDID, Directory: dir,
		AccountResyncEvery: time.Hour, AccountResyncBurst: 2})
	for i := range 2 {
		if got := callResync(t, s.url, alice.good(t), ""); got.status != http.StatusOK {
			t.Fatalf("request %d: %+v", i, got)
		}
	}
	got := callResync(t, s.url, alice.good(t), "")
	secs, err := strconv.Atoi(got.retryAfter)
	if got.status != http.StatusTooManyRequests || got.Error != "RateLimitExceeded" || err != nil ||
		secs <= 3000 || secs > 3600 {
		t.Fatalf("third request: %+v (Retry-After %q), want 429 RateLimitExceeded, Retry-After about an hour",
			got, got.retryAfter)
	}
	if got := callResync(t, s.url, bob.good(t), ""); got.status != http.StatusOK {
		t.Fatalf("bob held back by alice's limit: %+v", got)
	}
	if got := s.src.resyncs(); len(got) != 3 {
		t.Fatalf("resyncs %v, want alice twice and bob", got)
	}
	if n := s.results(t, "rate_limited"); n != 1 {
		t.Errorf("rate_limited counted %v, want 1", n)
	}
}

// TestResyncAccountDisabled: with no service DID the method answers 501
// saying how to enable it, whatever the token.
func TestResyncAccountDisabled(t *testing.T) {
	t.Parallel()
	dir := identity.NewMockDirectory()
	alice, _ := accounts(t, dir)
	s := newResyncServer(t, httpapi.Config{Directory: dir})
	for _, tok := range []string{"", alice.good(t)} {
		got := callResync(t, s.url, tok, "")
		if got.status != http.StatusNotImplemented || got.Error != "MethodNotImplemented" ||
			!strings.Contains(got.Message, "--service-did") || !strings.Contains(got.Message, "CONSUMER_SERVICE_DID") {
			t.Errorf("token %v: %+v, want 501 saying how to enable it", tok != "", got)
		}
	}
	if got := s.src.resyncs(); len(got) != 0 {
		t.Fatalf("resynced %v while disabled", got)
	}
}

// TestResyncAccountFailedResync: a resync that fails is 503 with the
// (redacted) reason, not 200.
func TestResyncAccountFailedResync(t *testing.T) {
	t.Parallel()
	dir := identity.NewMockDirectory()
	alice, _ := accounts(t, dir)
	s := newResyncServer(t, httpapi.Config{ServiceDID: serviceDID, Directory: dir})
	s.src.mu.Lock()
	s.src.resyncErr = errResync
	s.src.mu.Unlock()
	got := callResync(t, s.url, alice.good(t), "")
	if got.status != http.StatusServiceUnavailable || got.Error != "ResyncFailed" || !strings.Contains(got.Message, errResync.Error()) {
		t.Fatalf("%+v, want 503 ResyncFailed", got)
	}
}

// TestResyncAccountConfig: a service DID needs a directory and must be a
// DID.
func TestResyncAccountConfig(t *testing.T) {
	t.Parallel()
	dir := identity.NewMockDirectory()
	base := httpapi.Config{Source: newFake(), Gatherer: prometheus.NewRegistry()}
	for _, c := range []struct {
		cfg  func(*httpapi.Config)
		want string // "" for valid
	}{
		{func(c *httpapi.Config) { c.ServiceDID = serviceDID }, "Directory"},
		{func(c *httpapi.Config) { c.ServiceDID, c.Directory = "authz.example.com", dir }, "ServiceDID"},
		{func(c *httpapi.Config) { c.ServiceDID, c.Directory = serviceDID, dir }, ""},
		{func(c *httpapi.Config) { c.ServiceDID, c.Directory = serviceDID+"#spaces_authz", dir }, ""},
		{func(c *httpapi.Config) { c.AccountResyncBurst = -1 }, "AccountResyncBurst"},
	} {
		cfg := base
		c.cfg(&cfg)
		err := cfg.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", cfg, err, c.want)
		}
	}
}

// blockingDirectory is a directory whose lookups wait for release: the
// requests it serves stay in progress.
type blockingDirectory struct {
	identity.Directory
	entered chan struct{}
	release chan struct{}
}

func (d *blockingDirectory) LookupDID(ctx context.Context, did syntax.DID) (*identity.Identity, error) {
	d.entered <- struct{}{}
	<-d.release
	return d.Directory.LookupDID(ctx, did)
}

// TestResyncAccountConcurrencyBound: past MaxAccountResyncs requests in
// progress (a token check included), the next gets 429 at once.
func TestResyncAccountConcurrencyBound(t *testing.T) {
	t.Parallel()
	dir := identity.NewMockDirectory()
	alice, bob := accounts(t, dir)
	slow := &blockingDirectory{Directory: dir, entered: make(chan struct{}, 1), release: make(chan struct{})}
	s := newResyncServer(t, httpapi.Config{ServiceDID: serviceDID, Directory: slow, MaxAccountResyncs: 1})
	first, firstErr := make(chan xrpcAnswer, 1), make(chan error, 1)
	tok := alice.good(t)
	go func() {
		got, err := tryResync(t.Context(), s.url, tok, "")
		first <- got
		firstErr <- err
	}()
	<-slow.entered
	got := callResync(t, s.url, bob.good(t), "")
	if got.status != http.StatusTooManyRequests || got.Error != "RateLimitExceeded" || got.retryAfter == "" {
		t.Errorf("second request while one is in progress: %+v, want 429 with Retry-After", got)
	}
	close(slow.release)
	if got, err := <-first, <-firstErr; err != nil || got.status != http.StatusOK {
		t.Fatalf("the request in progress: %+v %v", got, err)
	}
	if got := s.src.resyncs(); len(got) != 1 || got[0][0] != aliceDID {
		t.Fatalf("resyncs %v, want alice only", got)
	}
	if n := s.results(t, "busy"); n != 1 {
		t.Errorf("busy counted %v, want 1", n)
	}
}
