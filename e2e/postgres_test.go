//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/testrig/workload"
)

// The production datastore: SpiceDB on PostgreSQL, each test on a cluster
// of its own, so it can restart SpiceDB and PostgreSQL on the same data.

const rebuildsTotal = "spaces_authz_rebuilds_total"

// TestPostgresSpiceDBRestartResumesWithoutRebuild kills SpiceDB (on
// PostgreSQL) under a running consumer while the workload goes on, and
// starts it again on the same database and address: its state survives, so
// the consumer goes on from where it was with no rebuild and no reset. Then
// the consumer and SpiceDB are killed together: the new consumer starts
// from the stored cursor, again with no rebuild. Both end at zero drift.
func TestPostgresSpiceDBRestartResumesWithoutRebuild(t *testing.T) {
	s := newStack(t, stackOpts{postgres: true})
	d := s.newDriver("user", 3, workload.Seed(t, "E2E_SEED"), workload.Options{})
	ctx := context.Background()
	p := s.startConsumer()
	s.waitReady()
	s.waitRebuildDone() // the first run's rebuild, of the (empty) accounts
	rebuilds := s.metricValue(rebuildsTotal)
	if rebuilds != 1 {
		t.Fatalf("%s = %v after the first run, want 1", rebuildsTotal, rebuilds)
	}
	must(t, d.until(ctx, 150))
	s.waitOracle(time.Minute)
	cursor0 := readCursor(t, s)

	// 1. SpiceDB killed under the running consumer; writes go on.
	s.stopSpiceDB()
	must(t, d.until(ctx, 250))
	time.Sleep(2 * time.Second) // the consumer meets the dead SpiceDB
	if !p.Running() {
		t.Fatalf("the consumer exited while SpiceDB was down:\n%s", tail(p.Output(), 3000))
	}
	s.startSpiceDB()
	must(t, d.until(ctx, 400))
	n, took := s.waitOracle(2 * time.Minute)
	d.confirmLastRevs()
	if !p.Running() {
		t.Fatalf("the consumer exited after SpiceDB came back:\n%s", tail(p.Output(), 3000))
	}
	if got := s.metricValue(rebuildsTotal); got != rebuilds {
		t.Fatalf("%s went from %v to %v across the SpiceDB restart", rebuildsTotal, rebuilds, got)
	}
	if out := p.Output(); strings.Contains(out, "SpiceDB was reset") || strings.Count(out, "rebuild started") != 1 {
		t.Fatalf("the SpiceDB restart was taken for a reset:\n%s", tail(out, 3000))
	}
	cursor1 := readCursor(t, s)
	if cursor1 <= cursor0 {
		t.Fatalf("the stored cursor did not move after SpiceDB came back: %d, was %d", cursor1, cursor0)
	}
	t.Logf("SpiceDB restarted under the running consumer: %d relationships match the oracle (%v); cursor %d → %d, no rebuild",
		n, took, cursor0, cursor1)

	// 2. The consumer and SpiceDB killed together; a new consumer resumes
	// from the stored cursor.
	p.Kill()
	s.restartSpiceDB()
	stored := readCursor(t, s)
	logStart := len(p.Output()) // the log file is shared by the processes
	p = s.startConsumer()
	s.waitReady()
	must(t, d.run(ctx, 550))
	n, took = s.waitOracle(2 * time.Minute)
	d.confirmLastRevs()
	out := p.Output()[logStart:]
	if running := grep(out, `msg="consumer running"`); !strings.Contains(running, fmt.Sprintf(" cursor=%d ", stored)) {
		t.Fatalf("the restarted consumer did not resume from the stored cursor %d:\n%s", stored, tail(out, 3000))
	}
	if got := s.metricValue(rebuildsTotal); got != 0 || strings.Contains(out, "rebuild started") {
		t.Fatalf("the restarted consumer rebuilt (%s = %v):\n%s", rebuildsTotal, got, tail(out, 3000))
	}
	t.Logf("consumer and SpiceDB restarted: resumed from cursor %d with no rebuild; %d relationships match the oracle (%v); "+
		"%d record operations", stored, n, took, d.ops.Load())
}

// TestPostgresRestartUnderLoad stops PostgreSQL (an immediate shutdown:
// crash recovery at the start) for a few seconds while a workload writes
// through the PDS, then once more while the consumer is idle and a new
// account writes (its events need a read of SpiceDB: a cache miss). SpiceDB
// fails meanwhile; the consumer must neither exit nor move its cursor, and
// must retry until PostgreSQL is back; then every write is applied and
// SpiceDB matches the oracle, with no rebuild.
func TestPostgresRestartUnderLoad(t *testing.T) {
	s := newStack(t, stackOpts{postgres: true})
	d := s.newDriver("user", 3, workload.Seed(t, "E2E_SEED"), workload.Options{})
	ctx := context.Background()
	p := s.startConsumer()
	s.waitReady()
	s.waitRebuildDone()
	rebuilds := s.metricValue(rebuildsTotal)
	// outage stops PostgreSQL for about 5 s, runs meanwhile (after 2 s),
	// checks that the consumer lives and its cursor stays, and starts
	// PostgreSQL again.
	outage := func(meanwhile func()) (time.Duration, httpapi.Status) {
		t.Helper()
		s.pg.Stop(true)
		down := time.Now()
		alive := func() {
			t.Helper()
			if !p.Running() {
				t.Fatalf("the consumer exited while PostgreSQL was down:\n%s", tail(p.Output(), 3000))
			}
		}
		time.Sleep(2 * time.Second)
		alive()
		before := s.status()
		meanwhile()
		time.Sleep(time.Until(down.Add(5 * time.Second)))
		alive()
		during := s.status()
		if during.Cursor != before.Cursor {
			t.Fatalf("the cursor moved from %d to %d while PostgreSQL was down", before.Cursor, during.Cursor)
		}
		if err := s.pg.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return time.Since(down), during
	}

	// 1. Under load. The workload writes until the outage is over (a fixed
	// number of operations finished before PostgreSQL went down on a fast
	// machine, and the outage was then not under load).
	workDone := make(chan error, 1)
	stopWork := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopWork:
				workDone <- d.finish(ctx)
				return
			default:
			}
			if err := d.until(ctx, d.ops.Load()+1); err != nil {
				workDone <- err
				return
			}
		}
	}()
	started := time.Now()
	for d.ops.Load() < 100 {
		select {
		case err := <-workDone: // it writes until stopWork: only an error ends it
			t.Fatalf("the workload ended before the outage: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(started) > 2*time.Minute {
			t.Fatalf("the workload wrote %d record operations in 2 minutes", d.ops.Load())
		}
	}
	waitCursor(t, s, 1)
	down1, during1 := outage(func() {
		// The PDS keeps taking writes (it has its own store); one of its
		// commits can take a while on a loaded machine, so wait up to
		// 2.5 s (the outage lasts 5 s) for the next one.
		ops := d.ops.Load()
		for deadline := time.Now().Add(2500 * time.Millisecond); d.ops.Load() == ops; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the workload stalled while PostgreSQL was down: the outage was not under load")
			}
		}
	})
	close(stopWork)
	must(t, <-workDone)
	if during1.LastError == "" {
		t.Fatal("/v1/status showed no last_error while every write was failing: an operator could not tell")
	}
	n, took := s.waitOracle(3 * time.Minute)
	d.confirmLastRevs()

	// 2. Idle, and a repo the consumer has not seen writes.
	var late = s.account("late")
	var lateRev string
	down2, during2 := outage(func() {
		lateRev = s.apply(late, create(spaceC, "s", space(false)),
			create(relC, "v", rel("space", late.DID+"/s", "viewer", "acct", d.sessions[0].DID, "")))
	})
	// The consumer's retries back off up to 5 s and SpiceDB reconnects to
	// PostgreSQL on its next request, so the commit lands a few seconds
	// after PostgreSQL is back (CI once took more than 5 s): this asserts
	// that it lands, and reports how long it took.
	upAgain := time.Now()
	if _, err := s.consistentWithin(late.DID, lateRev, 30*time.Second); err != nil {
		t.Fatalf("the commit a new account wrote during the outage is not applied 30 s after PostgreSQL is back: %v\n%s",
			err, tail(p.Output(), 3000))
	}
	recovered := time.Since(upAgain)
	n2, took2 := s.waitOracle(time.Minute)
	d.confirmLastRevs()

	if !p.Running() {
		t.Fatalf("the consumer exited after PostgreSQL came back:\n%s", tail(p.Output(), 3000))
	}
	out := p.Output()
	if !strings.Contains(out, "retrying") {
		t.Fatalf("the consumer logged no retry during the outages:\n%s", tail(out, 3000))
	}
	if got := s.metricValue(rebuildsTotal); got != rebuilds || strings.Contains(out, "SpiceDB was reset") {
		t.Fatalf("a PostgreSQL restart was taken for a reset (%s %v → %v):\n%s", rebuildsTotal, rebuilds, got, tail(out, 3000))
	}
	t.Logf("PostgreSQL down %v under load (cursor held at %d, status %q, last error %q); %d record operations; "+
		"%d relationships match the oracle (%v after the workload)", down1.Round(time.Millisecond), during1.Cursor,
		during1.State, during1.LastError, d.ops.Load(), n, took)
	t.Logf("PostgreSQL down %v while idle, a new account writing (cursor held at %d, status %q, last error %q); "+
		"its commit applied %v after PostgreSQL was back; %d relationships match the oracle (%v); pipeline restarts %d",
		down2.Round(time.Millisecond), during2.Cursor, during2.State, during2.LastError, recovered.Round(time.Millisecond),
		n2, took2, s.status().PipelineRestarts)
}

// TestPostgresReadYourWrites is TestReadYourWrites on PostgreSQL: the
// token /v1/consistency returns makes CheckPermission see the grant (and
// then its deletion) on the first try.
func TestPostgresReadYourWrites(t *testing.T) { readYourWrites(t, stackOpts{postgres: true}, 100) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
