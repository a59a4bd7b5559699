package httpapi_test

import (
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
)

// TestLagWhileRebuilding: a first run (no cursor stored) builds the view
// from repo snapshots; until the rebuild commits the view is incomplete.
// PRODUCTION.md's lag-high runbook says lag grows "during a rebuild", and
// DESIGN §8 says lag_seconds is 0 only when the consumer is caught up. With
// an idle PDS and getRepo stalled, lag_seconds must not read 0.
func TestLagWhileRebuilding(t *testing.T) {
	e := testenv.New(t)
	testenv.Must(e.PDS.CreateAccount("alice"))
	testenv.Must(e.PDS.CreateAccount("bob"))
	release := make(chan struct{})
	defer close(release) // the hook's getRepo calls return
	e.PDS.SetRepoHook(func(string) error { <-release; return nil })
	reg := registry()
	r := e.StartFirstRun(func(c *pipeline.Config) { c.Registry = reg })
	deadline := time.Now().Add(15 * time.Second)
	for r.Snapshot().State != pipeline.StateRebuilding {
		if time.Now().After(deadline) {
			t.Fatalf("no rebuild: %+v", r.Snapshot())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // more than the quiet period
	s := r.Snapshot()
	lag := metrictest.Value(t, reg, "spaces_authz_lag_seconds")
	if s.State != pipeline.StateRebuilding {
		t.Fatalf("state %v", s.State)
	}
	if lag < 2 || s.LagSeconds < 2 {
		t.Fatalf("rebuild stalled for 3 s (view incomplete): lag_seconds %v (status %v, connected=%v, ready=%v); want >= 2",
			lag, s.LagSeconds, s.Connected, s.Ready())
	}
	// Once the rebuild commits, the view is complete: lag goes back to 0.
	release <- struct{}{}
	release <- struct{}{}
	e.WaitRebuilt(r, 1)
	deadline = time.Now().Add(10 * time.Second)
	for metrictest.Value(t, reg, "spaces_authz_lag_seconds") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("lag_seconds %v after the rebuild committed, want 0", metrictest.Value(t, reg, "spaces_authz_lag_seconds"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
