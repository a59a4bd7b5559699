package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
)

// TestConsistencyWaitersAreCapped: with MaxConsistencyWaiters waiting, the
// next request gets 429 at once; once they are done, requests wait again.
func TestConsistencyWaitersAreCapped(t *testing.T) {
	t.Parallel()
	const limit = 3
	src := newFake()
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(handler(t, httpapi.Config{Source: src, Gatherer: reg, MaxConsistencyWaiters: limit,
		Metrics: httpapi.NewMetrics(reg)}))
	defer srv.Close()
	u := srv.URL + "/v1/consistency?" + url.Values{"did": {"did:plc:alice"}, "rev": {"3jzfcijpj2z2a"},
		"timeout": {"20s"}}.Encode()
	var release sync.Once
	defer release.Do(func() { close(src.release) }) // a failed test doesn't leave waiters behind
	var wg sync.WaitGroup
	codes := make([]int, limit)
	for i := range limit {
		wg.Go(func() {
			codes[i], _ = get(t, u)
		})
	}
	for range limit {
		<-src.entered
	}
	// One more, with a short timeout so that a server without the cap
	// answers 504 rather than hanging the test.
	resp, err := http.Get(strings.Replace(u, "timeout=20s", "timeout=1s", 1))
	if err != nil {
		t.Fatal(err)
	}
	var cr httpapi.ConsistencyResponse
	_ = json.NewDecoder(resp.Body).Decode(&cr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(cr.Error, "too many") {
		t.Fatalf("waiter %d: %d (Retry-After %q) %+v, want 429", limit+1, resp.StatusCode, resp.Header.Get("Retry-After"), cr)
	}
	if n := metrictest.Value(t, reg, "spaces_authz_consistency_waiters"); n != limit {
		t.Errorf("spaces_authz_consistency_waiters %v, want %d", n, limit)
	}
	release.Do(func() { close(src.release) })
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("waiter %d: %d", i, c)
		}
	}
	if code, body := get(t, u); code != http.StatusOK {
		t.Fatalf("after the waiters left: %d %s", code, body)
	}
	if n := metrictest.Value(t, reg, "spaces_authz_consistency_refused_total"); n != 1 {
		t.Errorf("spaces_authz_consistency_refused_total %v, want 1", n)
	}
	if n := metrictest.Value(t, reg, "spaces_authz_consistency_waiters"); n != 0 {
		t.Errorf("spaces_authz_consistency_waiters %v after the waits, want 0", n)
	}
}

// TestStatusRedactsLastError: last_error keeps what went wrong, not the
// credentials of the URLs it quotes.
func TestStatusRedactsLastError(t *testing.T) {
	t.Parallel()
	src := newFake()
	src.snap.LastError = `firehose: dial "wss://alice:hunter2@pds.example.com/xrpc/com.atproto.sync.subscribeRepos?cursor=7": ` +
		`bad handshake; fanout: connect nats://svc:s3cret@nats:4222,nats://tok3n@nats2:4222: refused; ` +
		`GET https://pds.example.com/xrpc/x?access_token=abc123: 401`
	srv := httptest.NewServer(handler(t, httpapi.Config{Source: src, Gatherer: prometheus.NewRegistry()}))
	defer srv.Close()
	_, body := get(t, srv.URL+"/v1/status")
	var st httpapi.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hunter2", "s3cret", "tok3n", "abc123"} {
		if strings.Contains(body, secret) {
			t.Errorf("/v1/status serves %q: %s", secret, st.LastError)
		}
	}
	for _, kept := range []string{"pds.example.com", "bad handshake", "nats2:4222", "cursor=7"} {
		if !strings.Contains(st.LastError, kept) {
			t.Errorf("last_error lost %q: %s", kept, st.LastError)
		}
	}
	if got := httpapi.StatusOf(pipeline.Snapshot{LastError: "https://u:hunter2@h/"}).LastError; strings.Contains(got, "hunter2") {
		t.Errorf("StatusOf: %s", got)
	}
}
