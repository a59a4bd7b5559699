package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/crashpoint"
	"github.com/spaces-authz/spaces-authz/internal/testrig/procs"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/internal/testrig/workload"
	"github.com/spaces-authz/spaces-authz/projector"
	"github.com/spaces-authz/spaces-authz/view"
)

func buildConsumer(t *testing.T) string {
	t.Helper()
	bin, err := procs.BuildConsumer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func startProc(t *testing.T, bin string, e *testenv.Env, crashAt string, extra ...string) *procs.Proc {
	t.Helper()
	args := []string{"run", "--pds-url", e.PDS.URL(), "--spicedb-endpoint", e.SDB.Addr, "--spicedb-insecure",
		"--http-addr", "127.0.0.1:0", "--takeover", "--flush-every", "20ms", "--heartbeat-every", "300ms",
		"--log-format", "text", "--log-level", "warn"}
	p, err := procs.Start(bin, append(args, extra...),
		[]string{"CONSUMER_SPICEDB_TOKEN=" + e.Token, crashpoint.EnvVar + "=" + crashAt},
		filepath.Join(t.TempDir(), "consumer.log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func apply(t *testing.T, e *testenv.Env, dids []string, s workload.Step) {
	t.Helper()
	did := dids[s.Account]
	var err error
	switch s.Kind {
	case workload.KindCommit:
		_, _, err = e.PDS.Commit(did, s.Writes...)
	case workload.KindSilent:
		_, err = e.PDS.CommitSilently(did, s.Writes...)
	case workload.KindSync:
		_, err = e.PDS.Sync(did)
	case workload.KindStatus:
		st := s.Status
		if s.Active {
			st = ""
		}
		e.SetStatus(did, st)
	}
	if err != nil {
		t.Fatalf("apply %+v: %v", s, err)
	}
}

// stateRelationships is everything SpiceDB holds except the lease and the
// cursor, which differ between runs by design.
func stateRelationships(e *testenv.Env) []string {
	return e.Relationships(view.TypeSpace, view.TypeGroup, view.TypeLineage, view.TypeRepo)
}

// TestCrashSafetyUnderSIGKILL kills the consumer process many times, at
// injected points and at random moments, while a randomized workload runs;
// the final SpiceDB state must equal an uninterrupted run's, tuple for
// tuple, and the oracle computed from the PDS's records. It runs on SpiceDB's
// memory datastore and on PostgreSQL.
func TestCrashSafetyUnderSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the consumer binary")
	}
	bin := buildConsumer(t)
	kills := map[testenv.Datastore]int{testenv.Memory: 40, testenv.Postgres: 25}
	for _, ds := range testenv.Datastores {
		t.Run(string(ds), func(t *testing.T) { crashSafety(t, bin, testenv.NewOn(t, ds), kills[ds]) })
	}
}

func crashSafety(t *testing.T, bin string, e *testenv.Env, kills int) {
	var dids []string
	for i := range 5 {
		r, err := e.PDS.CreateAccount(fmt.Sprintf("user%d", i))
		if err != nil {
			t.Fatal(err)
		}
		dids = append(dids, r.DID())
	}
	seed := workload.Seed(t, "CRASH_SEED") // the workload and the kill schedule
	gen := workload.New(seed, dids, workload.Options{Gaps: true, Syncs: true, StatusChanges: true})
	rng := rand.New(rand.NewPCG(seed, 7))
	points := []string{crashpoint.AfterWrite, crashpoint.BeforeWrite, crashpoint.MidBatch, crashpoint.DuringResync,
		crashpoint.Reconnect, ""}
	injected, external, ops := 0, 0, 0
	countOps := func(s workload.Step) {
		ops += len(s.Writes)
		apply(t, e, dids, s)
	}
	for range 30 {
		countOps(gen.Next())
	}
	// Replay the stream from the start rather than rebuild from snapshots
	// (the first-run rebuild has its own tests), so that the reference run
	// below sees exactly the same events.
	e.StoreCursor(0)
	for k := range kills {
		point := points[rng.IntN(len(points))]
		crashAt := ""
		if point != "" {
			crashAt = fmt.Sprintf("%s:%d", point, 1+rng.IntN(6))
		}
		batch := fmt.Sprint([]int{1, 7, 50, projector.MaxBatchUpdates}[rng.IntN(4)])
		p := startProc(t, bin, e, crashAt, "--batch-updates", batch)
		steps := 10 + rng.IntN(30)
		for i := 0; i < steps && p.Running(); i++ {
			countOps(gen.Next())
			if rng.IntN(15) == 0 {
				e.PDS.Drop() // exercise reconnects
			}
			time.Sleep(time.Duration(rng.IntN(4)) * time.Millisecond)
		}
		select {
		case <-p.Done():
		case <-time.After(time.Duration(rng.IntN(150)) * time.Millisecond):
		}
		if p.Running() {
			p.Kill()
			external++
		} else {
			injected++
		}
		if !p.Signaled() {
			t.Fatalf("run %d (%s) exited on its own (%v):\n%s", k, crashAt, p.Cmd.ProcessState, p.Output())
		}
	}
	for _, s := range gen.LastWrites() {
		countOps(s)
	}

	// A clean run catches up from wherever the kills left the cursor.
	final := startProc(t, bin, e, "")
	head := e.PDS.Head()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := e.Client.ReadProjector(context.Background(), "default")
		if err == nil && st.Progress.Cursor >= head {
			break
		}
		if !final.Running() || time.Now().After(deadline) {
			t.Fatalf("final run did not reach head %d (cursor %d, err %v):\n%s", head, st.Progress.Cursor, err, final.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := final.Stop(15 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, final.Output())
	}
	got := stateRelationships(e)

	// The reference: one uninterrupted run over the same stream.
	ref := e.Fork()
	ref.StoreCursor(0)
	r := ref.Start()
	ref.WaitCaughtUp(r)
	want := stateRelationships(ref)
	if d := testenv.Diff(got, want); d != "" {
		t.Fatalf("after %d kills the state differs from an uninterrupted run:\n%s", kills, d)
	}
	e.AssertMatchesOracle()
	t.Logf("kills: %d injected + %d external = %d; %d record operations in %d events; %d relationships compared, 0 mismatches",
		injected, external, injected+external, ops, head, len(got))
}
