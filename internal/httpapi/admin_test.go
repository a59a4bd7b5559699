package httpapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
)

const adminToken = "0123456789abcdef0123456789abcdef"

// answer is what a request got back (its body read and closed).
type answer struct {
	StatusCode int
	Header     http.Header
}

// post sends POST /v1/admin/resync with dids and, when auth is not empty,
// it as the Authorization header.
func post(t *testing.T, base, auth string, dids ...string) (answer, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
		base+"/v1/admin/resync?"+url.Values{"did": dids}.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{StatusCode: resp.StatusCode, Header: resp.Header}, string(b)
}

func dids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("did:plc:%024d", i)
	}
	return out
}

// TestAdminDisabledWithoutToken: no token configured, no admin API: 403
// that says how to turn it on, whatever the request carries.
func TestAdminDisabledWithoutToken(t *testing.T) {
	t.Parallel()
	src := newFake()
	srv := httptest.NewServer(handler(t, httpapi.Config{Source: src, Gatherer: prometheus.NewRegistry()}))
	defer srv.Close()
	for _, auth := range []string{"", "Bearer " + adminToken} {
		resp, body := post(t, srv.URL, auth, "did:plc:alice")
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "CONSUMER_ADMIN_TOKEN") ||
			!strings.Contains(body, "--admin-token-file") {
			t.Errorf("auth %q: %d %s, want 403 saying how to enable it", auth, resp.StatusCode, body)
		}
	}
	if got := src.resyncs(); len(got) != 0 {
		t.Fatalf("resynced %v with the admin API disabled", got)
	}
}

// TestAdminRequiresBearerToken: 401 with a Bearer challenge unless the
// request carries the token.
func TestAdminRequiresBearerToken(t *testing.T) {
	t.Parallel()
	src := newFake()
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(handler(t, httpapi.Config{Source: src, Gatherer: reg, AdminToken: adminToken,
		Metrics: httpapi.NewMetrics(reg)}))
	defer srv.Close()
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Bearer " + adminToken + "x",
		"Bearer " + adminToken[:len(adminToken)-1], "Basic " + adminToken, adminToken} {
		resp, body := post(t, srv.URL, auth, "did:plc:alice")
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("auth %q: %d (WWW-Authenticate %q) %s, want 401 with a Bearer challenge", auth, resp.StatusCode,
				resp.Header.Get("WWW-Authenticate"), body)
		}
	}
	if got := src.resyncs(); len(got) != 0 {
		t.Fatalf("resynced %v without the token", got)
	}
	for _, auth := range []string{"Bearer " + adminToken, "bearer " + adminToken} {
		resp, body := post(t, srv.URL, auth, "did:plc:alice", "did:web:example.com")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("auth %q: %d %s", auth, resp.StatusCode, body)
		}
		var out map[string]int
		if err := json.Unmarshal([]byte(body), &out); err != nil || out["resynced"] != 2 {
			t.Fatalf("body %s (%v)", body, err)
		}
	}
	if got := src.resyncs(); len(got) != 2 || strings.Join(got[0], ",") != "did:plc:alice,did:web:example.com" {
		t.Fatalf("resyncs %v", got)
	}
	if n := metrictest.Value(t, reg, "spaces_authz_admin_requests_total", "outcome", "unauthorized"); n != 8 {
		t.Errorf("unauthorized requests counted: %v, want 8", n)
	}
	if n := metrictest.Value(t, reg, "spaces_authz_admin_requests_total", "outcome", "ok"); n != 2 {
		t.Errorf("ok requests counted: %v, want 2", n)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

// TestAdminCapsDIDsPerRequest: past MaxResyncDIDs, 413 and nothing done;
// malformed or missing DIDs, 400.
func TestAdminCapsDIDsPerRequest(t *testing.T) {
	t.Parallel()
	src := newFake()
	srv := httptest.NewServer(handler(t, httpapi.Config{Source: src, Gatherer: prometheus.NewRegistry(),
		AdminToken: adminToken}))
	defer srv.Close()
	auth := "Bearer " + adminToken
	resp, body := post(t, srv.URL, auth, dids(9000)...)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, fmt.Sprint(httpapi.MaxResyncDIDs)) {
		t.Fatalf("9000 DIDs: %d %s, want 413 naming the limit", resp.StatusCode, body)
	}
	resp, body = post(t, srv.URL, auth, dids(httpapi.MaxResyncDIDs+1)...)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("%d DIDs: %d %s, want 413", httpapi.MaxResyncDIDs+1, resp.StatusCode, body)
	}
	if got := src.resyncs(); len(got) != 0 {
		t.Fatalf("resynced %d lists past the cap", len(got))
	}
	for _, bad := range [][]string{{}, {"did:plc:alice", "alice"}, {"did:plc:alice", "did:PLC:x"}, {""}} {
		if resp, body := post(t, srv.URL, auth, bad...); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("DIDs %q: %d %s, want 400", bad, resp.StatusCode, body)
		}
	}
	if resp, body := post(t, srv.URL, auth, dids(httpapi.MaxResyncDIDs)...); resp.StatusCode != http.StatusOK {
		t.Fatalf("%d DIDs: %d %s", httpapi.MaxResyncDIDs, resp.StatusCode, body)
	}
	if got := src.resyncs(); len(got) != 1 || len(got[0]) != httpapi.MaxResyncDIDs {
		t.Fatalf("resyncs %d", len(got))
	}
}

// TestAdminResyncErrorIsRedacted: a failed resync answers 503 without the
// credentials its error quotes.
func TestAdminResyncErrorIsRedacted(t *testing.T) {
	t.Parallel()
	src := newFake()
	src.resyncErr = fmt.Errorf(`get "https://admin:hunter2@pds.example.com/xrpc/com.atproto.sync.getRepo": %w`, errResync)
	srv := httptest.NewServer(handler(t, httpapi.Config{Source: src, Gatherer: prometheus.NewRegistry(),
		AdminToken: adminToken}))
	defer srv.Close()
	resp, body := post(t, srv.URL, "Bearer "+adminToken, "did:plc:alice")
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(body, "hunter2") ||
		!strings.Contains(body, "pds.example.com") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

// TestAdminOnItsOwnListener: split, the public handler serves everything
// but /v1/admin/*, and the admin handler nothing but it.
func TestAdminOnItsOwnListener(t *testing.T) {
	t.Parallel()
	src := newFake()
	a, err := httpapi.New(httpapi.Config{Source: src, Gatherer: prometheus.NewRegistry(), AdminToken: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	pub := httptest.NewServer(a.PublicHandler())
	defer pub.Close()
	adm := httptest.NewServer(a.AdminHandler())
	defer adm.Close()
	auth := "Bearer " + adminToken
	if resp, body := post(t, pub.URL, auth, "did:plc:alice"); resp.StatusCode != http.StatusNotFound ||
		!strings.Contains(body, "--admin-addr") {
		t.Errorf("admin on the public listener: %d %s, want 404", resp.StatusCode, body)
	}
	if code, _ := get(t, pub.URL+"/healthz"); code != http.StatusOK {
		t.Errorf("public /healthz: %d", code)
	}
	if code, _ := get(t, pub.URL+"/metrics"); code != http.StatusOK {
		t.Errorf("public /metrics: %d", code)
	}
	if resp, body := post(t, adm.URL, auth, "did:plc:alice"); resp.StatusCode != http.StatusOK {
		t.Errorf("admin listener: %d %s", resp.StatusCode, body)
	}
	if resp, _ := post(t, adm.URL, "", "did:plc:alice"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("admin listener without a token: %d", resp.StatusCode)
	}
	for _, p := range []string{"/metrics", "/v1/status", "/healthz"} {
		if code, _ := get(t, adm.URL+p); code != http.StatusNotFound {
			t.Errorf("admin listener serves %s: %d", p, code)
		}
	}
	if got := src.resyncs(); len(got) != 1 {
		t.Fatalf("resyncs %v, want the admin listener's one", got)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  httpapi.Config
		want string
	}{
		{httpapi.Config{Gatherer: prometheus.NewRegistry()}, "Source"},
		{httpapi.Config{Source: newFake()}, "Gatherer"},
		{httpapi.Config{Source: newFake(), Gatherer: prometheus.NewRegistry(), AdminToken: "short"}, "AdminToken"},
		{httpapi.Config{Source: newFake(), Gatherer: prometheus.NewRegistry(), MaxConsistencyWaiters: -1}, "MaxConsistencyWaiters"},
	} {
		if _, err := httpapi.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %s, got %v", tc.want, err)
		}
	}
}
