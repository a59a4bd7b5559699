package projector_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/pgtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// BenchmarkProjectionWriteRate measures, in one run against one kind of real
// SpiceDB (the memory datastore, or `spicedb serve` on a durable PostgreSQL
// cluster: fsync on), three ways of getting the same kind of relationships
// in, each into a fresh, empty datastore of that kind:
//   - projection: the consumer following a stream of 20,000 relation
//     records, end to end (one record per commit, as createRecord writes
//     them; or 4 per commit, as applyWrites may);
//   - raw: SpiceDB's own rate for 1,000-TOUCH WriteRelationships batches;
//   - one-per-event: one WriteRelationships call per commit with its
//     updates, what a naive consumer does.
//
// On PostgreSQL every fresh datastore is a new database on the same
// cluster, served by its own `spicedb serve`. The projection must match the
// oracle and the raw writes must all be stored, or the benchmark fails.
//
// Targets (DESIGN §10): projection ≥ 50% of raw, ≥ 4× one-per-event.
func BenchmarkProjectionWriteRate(b *testing.B) {
	streams := map[int]*writeStream{}
	var cluster *pgtest.Cluster
	defer func() {
		if cluster != nil {
			cluster.Remove()
		}
	}()
	for _, ds := range testenv.Datastores {
		for _, perCommit := range []int{1, 4} {
			b.Run(fmt.Sprintf("datastore=%s/records-per-commit=%d", ds, perCommit), func(sb *testing.B) {
				if streams[perCommit] == nil {
					// on the parent: the stream serves both datastores
					streams[perCommit] = newWriteStream(b, 20000/perCommit, perCommit)
				}
				benchWriteRate(sb, streams[perCommit], freshDatastores(sb, ds, &cluster))
			})
		}
	}
}

// freshDatastores returns a function that forks an env onto a fresh, empty
// datastore of kind ds: a memory one, or a new database on a durable
// PostgreSQL cluster (started on first use, into *cluster) served by its own
// `spicedb serve`.
func freshDatastores(b *testing.B, ds testenv.Datastore, cluster **pgtest.Cluster) func(e *testenv.Env) *testenv.Env {
	if ds == testenv.Memory {
		return (*testenv.Env).Fork
	}
	return func(e *testenv.Env) *testenv.Env {
		if *cluster == nil {
			c, err := pgtest.Start(context.Background(), pgtest.Options{Durable: true})
			if err != nil {
				b.Fatal(err)
			}
			*cluster = c
		}
		sdb, _ := pgtest.SpiceDBOn(b, *cluster)
		return e.ForkOnSpiceDB(sdb)
	}
}

// writeStream is a fake PDS holding a stream of commits of relation
// records, and what a naive consumer writes for each commit.
type writeStream struct {
	e         *testenv.Env
	events    [][]view.Update
	commits   int
	perCommit int
}

// newWriteStream builds it; the fake PDS stops with b.
func newWriteStream(b *testing.B, commits, perCommit int) *writeStream {
	const accounts = 40
	e := testenv.New(b)
	var dids []string
	for i := range accounts {
		dids = append(dids, testenv.Must(e.PDS.CreateAccount(fmt.Sprintf("w%02d", i))).DID())
	}
	rules := view.DefaultRules()
	var events [][]view.Update // per commit: what a naive consumer writes
	for c := range commits {
		a := c % accounts
		did := dids[a]
		var ws []fakepds.Write
		if c < accounts {
			ws = append(ws, testenv.Space("create", "s", false))
		}
		for k := range perCommit {
			ws = append(ws, testenv.Relation("create", fmt.Sprintf("r%d-%d", c, k), "space", did+"/s", "viewer", "acct",
				dids[(c+k+1)%accounts], ""))
		}
		cm, _, err := e.PDS.Commit(did, ws...)
		if err != nil {
			b.Fatal(err)
		}
		var ups []view.Update
		for _, w := range ws {
			tuples, _ := rules.Project(did, w.Collection, w.RKey, w.Value)
			for _, t := range tuples {
				ups = append(ups, view.Update{Op: view.OpTouch, Tuple: t},
					view.Update{Op: view.OpTouch, Tuple: view.LineageTuple(t, view.RecordID(did, w.Collection, w.RKey))})
			}
		}
		ups = append(ups, view.Update{Op: view.OpTouch, Tuple: view.RevTuple(did, cm.Rev)})
		events = append(events, ups)
	}
	return &writeStream{e: e, events: events, commits: commits, perCommit: perCommit}
}

func benchWriteRate(b *testing.B, s *writeStream, fresh func(*testenv.Env) *testenv.Env) {
	e, events, commits, perCommit := s.e, s.events, s.commits, s.perCommit
	records := commits * perCommit
	for range b.N {
		// 1. projection, end to end
		env := fresh(e)
		env.StoreCursor(0)
		reg := prometheus.NewRegistry()
		start := time.Now()
		r := env.Start(func(c *pipeline.Config) { c.Registry = reg; c.Engine.FlushEvery = time.Second })
		waitCaughtUp(b, env, r, 10*time.Minute)
		took := time.Since(start)
		if err := r.Stop(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		env.AssertMatchesOracle()
		b.StartTimer()
		written := metrictest.Value(b, reg, "spaces_authz_spicedb_relationship_updates_total")
		repoUps := metrictest.Value(b, reg, "spaces_authz_spicedb_repo_bookkeeping_updates_total")
		calls, writeSecs := histogram(b, reg, "spaces_authz_spicedb_write_duration_seconds")
		projRate := written / took.Seconds()

		// 2. raw 1,000-TOUCH batches of the same number of relationships
		raw := fresh(e)
		var all []view.Update
		seen := map[view.Tuple]bool{}
		for _, ev := range events {
			for _, u := range ev {
				if !seen[u.Tuple] {
					seen[u.Tuple] = true
					all = append(all, u)
				}
			}
		}
		start = time.Now()
		for i := 0; i < len(all); i += 1000 {
			write(b, raw.Client, all[i:min(i+1000, len(all))])
		}
		rawRate := float64(len(all)) / time.Since(start).Seconds()
		b.StopTimer()
		if got := len(raw.Relationships(view.TypeSpace, view.TypeGroup, view.TypeLineage, view.TypeRepo)); got != len(all) {
			b.Fatalf("raw: %d relationships stored, %d written", got, len(all))
		}
		b.StartTimer()

		// 3. one WriteRelationships per event (a sample of 1,000 commits)
		naive := fresh(e)
		start = time.Now()
		n := 0
		for _, ev := range events[:1000] {
			write(b, naive.Client, ev)
			n += len(ev)
		}
		naiveRate := float64(n) / time.Since(start).Seconds()

		b.ReportMetric(projRate, "projection-updates/s")
		b.ReportMetric(float64(records)/took.Seconds(), "projection-records/s")
		b.ReportMetric(rawRate, "raw-1000-touch-updates/s")
		b.ReportMetric(naiveRate, "one-per-event-updates/s")
		b.ReportMetric(projRate/rawRate, "ratio-vs-raw")
		b.ReportMetric(projRate/naiveRate, "ratio-vs-one-per-event")
		b.Logf("projection: %d records, %.0f updates (%.0f of repo bookkeeping) in %v (%.0f updates/s, %.0f records/s) "+
			"in %d writes (%.0f updates each, %.2fs writing); raw 1,000-TOUCH: %d updates, %.0f/s; one write per event: %.0f/s",
			records, written, repoUps, took.Round(time.Millisecond), projRate, float64(records)/took.Seconds(), calls,
			written/float64(max(calls, 1)), writeSecs, len(all), rawRate, naiveRate)
	}
}

// waitCaughtUp is testenv's WaitCaughtUp with a deadline fit for a
// benchmark on a durable datastore.
func waitCaughtUp(b *testing.B, e *testenv.Env, r *testenv.Running, within time.Duration) {
	b.Helper()
	head := e.PDS.Head()
	deadline := time.Now().Add(within)
	for {
		s := r.Snapshot()
		if s.Watermark >= head {
			return
		}
		select {
		case <-r.Done():
			b.Fatalf("consumer stopped before catching up (watermark %d, head %d): %v", s.Watermark, head, r.Err())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("consumer did not catch up in %v: watermark %d, head %d, state %s, last error %s",
				within, s.Watermark, head, s.State, s.LastError)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func write(b *testing.B, c *spice.Client, ups []view.Update) {
	b.Helper()
	req := &v1.WriteRelationshipsRequest{}
	for _, u := range ups {
		op := v1.RelationshipUpdate_OPERATION_TOUCH
		if u.Op == view.OpDelete {
			op = v1.RelationshipUpdate_OPERATION_DELETE
		}
		req.Updates = append(req.Updates, &v1.RelationshipUpdate{Operation: op, Relationship: c.ToV1(u.Tuple)})
	}
	if _, err := c.API().WriteRelationships(context.Background(), req); err != nil {
		b.Fatal(err)
	}
}

func histogram(b *testing.B, reg *prometheus.Registry, name string) (int, float64) {
	b.Helper()
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			h := mf.GetMetric()[0].GetHistogram()
			return int(h.GetSampleCount()), h.GetSampleSum()
		}
	}
	return 0, 0
}
