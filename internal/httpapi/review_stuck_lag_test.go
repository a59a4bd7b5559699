package httpapi_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
)

// TestLagGrowsWhileSpiceDBIsDown: connected to the PDS, events keep coming
// (never quiet), and SpiceDB is gone so nothing is applied: the lag must
// grow with the wall clock, never fall back to 0.
func TestLagGrowsWhileSpiceDBIsDown(t *testing.T) {
	sdb, err := spicedbtest.StartServe(context.Background(), spicedbtest.ServeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sdb.Stop)
	e := testenv.NewOnSpiceDB(t, sdb)
	alice := testenv.Must(e.PDS.CreateAccount("alice")).DID()
	reg := registry()
	r := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	e.WaitCaughtUp(r)
	time.Sleep(2500 * time.Millisecond)
	if v := metrictest.Value(t, reg, "spaces_authz_lag_seconds"); v != 0 {
		t.Fatalf("caught up: lag %v", v)
	}
	sdb.Stop()
	start := time.Now()
	var samples []float64
	for i := 0; time.Since(start) < 5*time.Second; i++ {
		if _, _, err := e.PDS.Commit(alice, testenv.Space("create", fmt.Sprintf("s%d", i), false)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond)
		samples = append(samples, metrictest.Value(t, reg, "spaces_authz_lag_seconds"))
	}
	s := r.Snapshot()
	last := samples[len(samples)-1]
	t.Logf("state %v connected=%v lag %v events / %vs; samples %v", s.State, s.Connected, s.LagEvents, s.LagSeconds, samples)
	if last < 4 {
		t.Fatalf("SpiceDB down for 5 s with events arriving: lag_seconds %v; want >= 4 (samples %v)", last, samples)
	}
	for i := 4; i < len(samples); i++ {
		if samples[i] < samples[i-1] {
			t.Fatalf("lag fell while nothing could be applied: samples %v", samples)
		}
	}
}
