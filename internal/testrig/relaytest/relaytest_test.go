package relaytest_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/spaces-authz/spaces-authz/internal/testrig/relaytest"
)

// upstream is a websocket endpoint that accepts the relay's subscription
// and sends nothing: enough for the relay to count as subscribed.
func upstream(t *testing.T) (host string, dials *atomic.Int32) {
	t.Helper()
	dials = new(atomic.Int32)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/xrpc/com.atproto.sync.subscribeRepos" {
			http.NotFound(w, r)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		dials.Add(1)
		defer c.Close()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return "localhost:" + u.Port(), dials
}

// listHosts returns the hosts the relay's admin API lists with an active
// connection. (The public com.atproto.sync.listHosts lists only hosts that
// have sent an event.)
func listHosts(t *testing.T, r *relaytest.Relay) []string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, r.URL()+"/admin/pds/list", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("admin", r.AdminPassword())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/admin/pds/list: %s", resp.Status)
	}
	var out []struct {
		Host                string
		HasActiveConnection bool
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	var hs []string
	for _, h := range out {
		if h.HasActiveConnection {
			hs = append(hs, h.Host)
		}
	}
	slices.Sort(hs)
	return hs
}

// TestHostsSurviveRestarts: hosts given to Start and AddHosts are listed
// by the relay and subscribed to again after a SIGKILL and a clean stop.
func TestHostsSurviveRestarts(t *testing.T) {
	h1, d1 := upstream(t)
	h2, d2 := upstream(t)
	// No PDS here: with no account events the PLC is never asked.
	r := relaytest.Start(t, relaytest.Config{PLCURL: "http://localhost:1", Hosts: []string{h1}})
	if got, want := listHosts(t, r), []string{h1}; !slices.Equal(got, want) {
		t.Fatalf("listHosts = %v, want %v", got, want)
	}
	r.AddHosts(h2)
	want := []string{h1, h2}
	slices.Sort(want)
	if got := listHosts(t, r); !slices.Equal(got, want) {
		t.Fatalf("after AddHosts: listHosts = %v, want %v", got, want)
	}
	before1, before2 := d1.Load(), d2.Load()
	r.Kill()
	r.Start()
	r.Stop()
	r.Start()
	if got := listHosts(t, r); !slices.Equal(got, want) {
		t.Fatalf("after restarts: listHosts = %v, want %v", got, want)
	}
	// Start returned only after the handshakes, so the dials are counted.
	if d1.Load() < before1+2 || d2.Load() < before2+2 {
		t.Fatalf("upstream dials after two restarts: %d→%d and %d→%d, want +2 each", before1, d1.Load(), before2, d2.Load())
	}
}

// TestRejectsNonLocalhostHosts: only localhost:PORT hosts are accepted.
func TestRejectsNonLocalhostHosts(t *testing.T) {
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		relaytest.Start(ft, relaytest.Config{PLCURL: "http://localhost:1", Hosts: []string{"127.0.0.1:2583"}})
	}()
	<-done
	if !ft.failed {
		t.Fatal("Start accepted host 127.0.0.1:2583")
	}
}

// fatalRecorder records a Fatal instead of failing the real test.
type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Fatal(...any) { f.failed = true; runtime.Goexit() }

func (f *fatalRecorder) Fatalf(string, ...any) { f.failed = true; runtime.Goexit() }

// TestLaunchChecksConfig: Launch (outside a test) reports a bad Config as an
// error and starts nothing.
func TestLaunchChecksConfig(t *testing.T) {
	for name, cfg := range map[string]relaytest.Config{
		"no PLC":       {DataDir: t.TempDir()},
		"no data dir":  {PLCURL: "http://localhost:1"},
		"not loopback": {PLCURL: "http://localhost:1", DataDir: t.TempDir(), Hosts: []string{"127.0.0.1:2583"}},
	} {
		if s, err := relaytest.Launch(cfg); err == nil {
			_ = s.Stop()
			t.Errorf("%s: Launch(%+v) started a relay", name, cfg)
		}
	}
}
