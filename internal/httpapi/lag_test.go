package httpapi_test

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
)

// TestStatusTellsTheLagWhileDisconnected: /v1/status (what `consumer
// status` prints) and /metrics say lag 0 for a consumer caught up with an
// idle PDS, and a lag growing with the clock, beside connected=false, while
// the PDS is unreachable; back to 0 once it is reachable and caught up.
func TestStatusTellsTheLagWhileDisconnected(t *testing.T) {
	e := testenv.New(t)
	alice := testenv.Must(e.PDS.CreateAccount("alice")).DID()
	reg := registry()
	r := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	srv := httptest.NewServer(handler(t, httpapi.Config{Source: r.Consumer, Gatherer: reg}))
	defer srv.Close()
	status := func() httpapi.Status {
		t.Helper()
		var st httpapi.Status
		if _, body := get(t, srv.URL+"/v1/status"); json.Unmarshal([]byte(body), &st) != nil {
			t.Fatalf("status %s", body)
		}
		return st
	}
	scraped := func() float64 {
		t.Helper()
		_, body := get(t, srv.URL+"/metrics")
		v, ok := value(body, "spaces_authz_lag_seconds")
		if !ok {
			t.Fatal("spaces_authz_lag_seconds is not exported")
		}
		return v
	}
	e.WaitCaughtUp(r)
	time.Sleep(2500 * time.Millisecond) // the stream's quiet period: caught up with an idle PDS
	if st := status(); !st.Connected || st.LagSeconds != 0 || st.LagEvents != 0 || scraped() != 0 {
		t.Fatalf("caught up and idle: connected=%v lag %vs, %d events", st.Connected, st.LagSeconds, st.LagEvents)
	}

	e.PDS.Refuse(true)
	e.PDS.Drop()
	deadline := time.Now().Add(10 * time.Second)
	for status().Connected {
		if time.Now().After(deadline) {
			t.Fatal("still connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, _, _ = e.PDS.Commit(alice, testenv.Space("create", "s", false))
	first := status()
	time.Sleep(1200 * time.Millisecond)
	second, metric := status(), scraped()
	if first.LagSeconds <= 0 || second.LagSeconds < first.LagSeconds+1 || metric < second.LagSeconds || second.Connected {
		t.Fatalf("disconnected: lag %vs then %vs (metric %vs), connected=%v; want it growing",
			first.LagSeconds, second.LagSeconds, metric, second.Connected)
	}

	e.PDS.Refuse(false)
	e.WaitCaughtUp(r)
	deadline = time.Now().Add(10 * time.Second)
	for st := status(); !st.Connected || st.LagSeconds != 0 || st.HeadSeq != e.PDS.Head(); st = status() {
		if time.Now().After(deadline) {
			t.Fatalf("reconnected and caught up: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
