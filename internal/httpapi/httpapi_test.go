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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
)

func registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector())
	return reg
}

// handler is the single-listener handler of cfg.
func handler(t *testing.T, cfg httpapi.Config) http.Handler {
	t.Helper()
	a, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a.Handler()
}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsAfterAScriptedRun sends a known script and checks the
// counters, the cursor, and that the whole registry passes promlint.
func TestMetricsAfterAScriptedRun(t *testing.T) {
	e := testenv.New(t)
	alice := testenv.Must(e.PDS.CreateAccount("alice")).DID()
	bob := testenv.Must(e.PDS.CreateAccount("bob")).DID()
	reg := registry()
	r := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	srv := httptest.NewServer(handler(t, httpapi.Config{Source: r.Consumer, Gatherer: reg, Metrics: httpapi.NewMetrics(reg)}))
	defer srv.Close()
	// 3 commits: 2 + 1 + 1 records, one of them rejected; then a
	// deactivation. One step at a time, so that each is its own write.
	e.WaitCaughtUp(r)
	_, _, _ = e.PDS.Commit(alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	_, _, _ = e.PDS.Commit(bob, testenv.Relation("create", "h", "space", alice+"/s", "admin", "acct", bob, ""))
	e.WaitCaughtUp(r)
	_, _, _ = e.PDS.Commit(alice, testenv.Delete("com.atproto.space.relation", "v"))
	e.WaitCaughtUp(r)
	e.SetStatus(alice, "deactivated")
	e.WaitCaughtUp(r)
	time.Sleep(200 * time.Millisecond) // a flush writes the cursor

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	_, body := get(t, srv.URL+"/metrics")
	head := e.PDS.Head()
	// 2 accounts × (identity, account, commit, sync) + 3 commits + 1 account = 12 events.
	for metric, want := range map[string]float64{
		`spaces_authz_firehose_events_total{kind="commit"}`:              5,
		`spaces_authz_firehose_events_total{kind="account"}`:             3,
		`spaces_authz_firehose_events_total{kind="identity"}`:            2,
		`spaces_authz_firehose_events_total{kind="sync"}`:                2,
		`spaces_authz_rejected_records_total{reason="foreign_resource"}`: 1,
		`spaces_authz_firehose_head_seq`:                                 float64(head),
		`spaces_authz_cursor_seq`:                                        float64(head),
		`spaces_authz_watermark_seq`:                                     float64(head),
		`spaces_authz_lag_events`:                                        0,
		// space: owner+inherits and their lineage (4); relation: 1 + 1
		// lineage; alice's rev twice (bob produced nothing: no rev); the
		// status once; alice's source (the projector that owns her repo)
		// once, with her first bookkeeping.
		`spaces_authz_spicedb_relationship_updates_total{op="touch"}`: 4 + 2 + 2 + 1 + 1,
		// the delete: tuple + lineage + old rev; the deactivation: the 2
		// space tuples (the viewer grant is gone already).
		`spaces_authz_spicedb_relationship_updates_total{op="delete"}`: 3 + 2,
		`spaces_authz_lease_state{state="held"}`:                       1,
		`spaces_authz_ready`:                                           1,
	} {
		got, ok := value(body, metric)
		if !ok {
			t.Errorf("%s is not exported", metric)
			continue
		}
		if got != want {
			t.Errorf("%s = %v, want %v", metric, got, want)
		}
	}
	for _, forbidden := range []string{alice, bob, "at://"} {
		if strings.Contains(body, forbidden) {
			t.Errorf("a DID or AT-URI in /metrics: %s", forbidden)
		}
	}
	code, _ := get(t, srv.URL+"/healthz")
	code2, _ := get(t, srv.URL+"/readyz")
	if code != 200 || code2 != 200 {
		t.Fatalf("healthz %d readyz %d", code, code2)
	}
	var st httpapi.Status
	_, sb := get(t, srv.URL+"/v1/status")
	if err := json.Unmarshal([]byte(sb), &st); err != nil || st.Cursor != head || !st.Ready || st.EventsWritten == 0 {
		t.Fatalf("status %s (%v)", sb, err)
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || !strings.Contains(body, "stopped") {
		t.Fatalf("readyz after stop: %d %s", code, body)
	}
}

// value finds a sample in the text exposition.
func value(body, metric string) (float64, bool) {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, metric+" ") {
			var v float64
			_, err := fmt.Sscan(strings.TrimPrefix(l, metric+" "), &v)
			return v, err == nil
		}
	}
	return 0, false
}

func TestConsistencyEndpoint(t *testing.T) {
	e := testenv.New(t)
	alice := testenv.Must(e.PDS.CreateAccount("alice")).DID()
	bob := testenv.Must(e.PDS.CreateAccount("bob")).DID()
	reg := prometheus.NewRegistry()
	r := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	srv := httptest.NewServer(handler(t, httpapi.Config{Source: r.Consumer, Gatherer: reg}))
	defer srv.Close()
	ask := func(did, rev, timeout string) (int, httpapi.ConsistencyResponse) {
		q := url.Values{"did": {did}, "rev": {rev}}
		if timeout != "" {
			q.Set("timeout", timeout)
		}
		code, body := get(t, srv.URL+"/v1/consistency?"+q.Encode())
		var cr httpapi.ConsistencyResponse
		if err := json.Unmarshal([]byte(body), &cr); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		return code, cr
	}
	c, _, _ := e.PDS.Commit(alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	code, cr := ask(alice, c.Rev, "5s")
	if code != 200 || cr.ZedToken == "" {
		t.Fatalf("consistency: %d %+v", code, cr)
	}
	if code, _ := ask("did:plc:nope", c.Rev, "100ms"); code != 504 {
		t.Fatalf("unknown repo: %d, want 504", code)
	}
	if code, _ := ask("not-a-did", c.Rev, ""); code != 400 {
		t.Fatalf("malformed did: %d", code)
	}
	if code, _ := ask(alice, "not-a-rev", ""); code != 400 {
		t.Fatalf("malformed rev: %d", code)
	}
	if code, _ := ask(alice, c.Rev, "soon"); code != 400 {
		t.Fatalf("malformed timeout: %d", code)
	}
	// After a restart, an applied rev answers at once.
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	r2 := e.Start(func(c *pipeline.Config) { c.Registry = prometheus.NewRegistry() })
	srv2 := httptest.NewServer(handler(t, httpapi.Config{Source: r2.Consumer, Gatherer: prometheus.NewRegistry()}))
	defer srv2.Close()
	start := time.Now()
	code, body := get(t, srv2.URL+"/v1/consistency?"+url.Values{"did": {alice}, "rev": {c.Rev}, "timeout": {"3s"}}.Encode())
	if code != 200 || time.Since(start) > 2*time.Second {
		t.Fatalf("after a restart: %d %s in %v", code, body, time.Since(start))
	}
}
