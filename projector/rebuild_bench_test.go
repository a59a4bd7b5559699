package projector_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/pgtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
)

// BenchmarkRebuild100k rebuilds the view of 100 repos holding 1,000
// projected records each (100,000 records: spaces, groups, grants) from
// getRepo snapshots into a real SpiceDB, on the memory datastore and on
// `spicedb serve` over a durable PostgreSQL cluster (fsync on; a fresh
// database per run), with the default concurrency and with and without the
// rate limit. The rebuilt view must match the oracle. Target (DESIGN §10):
// ≤ 60 s. BENCH_REBUILD_REPOS=1000 rebuilds 1,000,000 records instead.
//
//	go test ./projector -run '^$' -bench BenchmarkRebuild100k -benchtime 1x
func BenchmarkRebuild100k(b *testing.B) {
	const perRepo = 1000
	repos := 100
	if s := os.Getenv("BENCH_REBUILD_REPOS"); s != "" {
		var err error
		if repos, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	e := testenv.New(b)
	var dids []string
	for i := range repos {
		r, err := e.PDS.CreateAccount(fmt.Sprintf("bench%03d", i))
		if err != nil {
			b.Fatal(err)
		}
		dids = append(dids, r.DID())
	}
	for i, did := range dids {
		var ws []fakepds.Write
		for k := range 20 {
			ws = append(ws, testenv.Space("create", fmt.Sprintf("s%d", k), k%5 == 0))
		}
		for k := range 5 {
			ws = append(ws, testenv.Group("create", fmt.Sprintf("g%d", k)))
		}
		for k := 0; len(ws) < perRepo; k++ {
			other := dids[(i+k+1)%repos]
			space := fmt.Sprintf("%s/s%d", did, k%20)
			switch k % 4 {
			case 0:
				ws = append(ws, testenv.Relation("create", fmt.Sprintf("r%d", k), "space", space, "viewer", "acct", other, ""))
			case 1:
				ws = append(ws, testenv.Relation("create", fmt.Sprintf("r%d", k), "space", space, "viewer", "group", other+"/g1", "member"))
			case 2:
				ws = append(ws, testenv.Relation("create", fmt.Sprintf("r%d", k), "group", fmt.Sprintf("%s/g%d", did, k%5), "direct_member", "acct", other, ""))
			default:
				ws = append(ws, testenv.Relation("create", fmt.Sprintf("r%d", k), "space", space, "editor", "acct", other, ""))
			}
		}
		if _, _, err := e.PDS.Commit(did, ws...); err != nil {
			b.Fatal(err)
		}
	}
	var cluster *pgtest.Cluster
	defer func() {
		if cluster != nil {
			cluster.Remove()
		}
	}()
	for _, ds := range testenv.Datastores {
		for _, rate := range []float64{20, 0} {
			b.Run(fmt.Sprintf("datastore=%s/resync-rate=%v", ds, rate), func(b *testing.B) {
				benchRebuild(b, e, freshDatastores(b, ds, &cluster), rate, repos*perRepo)
			})
		}
	}
}

func benchRebuild(b *testing.B, e *testenv.Env, fresh func(*testenv.Env) *testenv.Env, rate float64, records int) {
	for range b.N {
		env := fresh(e) // an empty SpiceDB datastore each time
		reg := prometheus.NewRegistry()
		c, err := pipeline.New(pipeline.Config{PDSURL: e.PDS.URL(), SpiceDB: env.SpiceConfig(), Logger: testenv.Logger(),
			Registry: reg, Rebuild: pipeline.RebuildConfig{AtStart: true, ExitWhenDone: true},
			Engine: pipeline.EngineConfig{ResyncRate: rate}})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := c.Run(context.Background()); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		c.Close()
		b.StopTimer()
		env.AssertMatchesOracle()
		n := len(env.Data()) + len(env.Lineage())
		mfs, _ := reg.Gather()
		sum := func(name string) float64 {
			for _, mf := range mfs {
				if mf.GetName() == name {
					return mf.GetMetric()[0].GetHistogram().GetSampleSum()
				}
			}
			return 0
		}
		b.ReportMetric(took.Seconds(), "s/rebuild")
		b.ReportMetric(float64(records)/took.Seconds(), "records/s")
		b.ReportMetric(float64(n)/took.Seconds(), "relationships/s")
		b.Logf("rebuild of %d records: %v; %d relationships written; getRepo+CAR read %.1fs summed over "+
			"4 concurrent fetches; SpiceDB writes %.1fs (one writer)", records, took.Round(time.Millisecond), n,
			sum("spaces_authz_sync_repo_fetch_duration_seconds"), sum("spaces_authz_spicedb_write_duration_seconds"))
		b.StartTimer()
	}
}
