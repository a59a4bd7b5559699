package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/grpc"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/pgtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/procs"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// BenchmarkStartupMillionRelationships starts the consumer binary on a view
// of about 1,000,000 relationships in SpiceDB on a durable PostgreSQL
// cluster (fsync on): 20,000 repos of 25 records each (spaces, groups,
// grants), their data and lineage tuples and each repo's bookkeeping (rev,
// source, status), loaded with ImportBulkRelationships, and a stored
// cursor. It measures the time from the process start until /readyz
// answers 200 (the repo index is loaded from every repo:<did> tuple, and the
// stream is connected), the RSS then and the peak RSS over the first
// seconds. The baseline of the same run is the same start on an empty view
// (a cursor only), on the same cluster. The consumer must log the number
// of repos it loaded, or the benchmark fails.
//
//	go test ./cmd/consumer -run '^$' -bench StartupMillionRelationships -benchtime 1x
func BenchmarkStartupMillionRelationships(b *testing.B) {
	bin, err := procs.BuildConsumer(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	cluster, err := pgtest.Start(context.Background(), pgtest.Options{Durable: true})
	if err != nil {
		b.Fatal(err)
	}
	defer cluster.Remove()
	for _, repos := range []int{0, 20000} {
		b.Run(fmt.Sprintf("repos=%d", repos), func(b *testing.B) {
			for range b.N {
				sdb, uri := pgtest.SpiceDBOn(b, cluster)
				e := testenv.NewOnSpiceDB(b, sdb)
				start := time.Now()
				n := fillView(b, e.Client, repos, 25)
				fill := time.Since(start)
				b.Logf("%d repos: %d relationships imported in %v (%.0f/s)", repos, n, fill.Round(time.Millisecond),
					float64(n)/max(fill.Seconds(), 1e-9))
				e.StoreCursor(e.PDS.Head())
				b.ResetTimer()
				// 1. right after the import, as autovacuum left the tables
				startConsumer(b, bin, e, repos, "")
				b.StopTimer()
				loadRepos(b, e, repos, "")
				// 2. the same start once PostgreSQL has statistics
				// (ANALYZE), as a view that has been running has
				start = time.Now()
				analyze(b, uri)
				b.Logf("ANALYZE: %v", time.Since(start).Round(time.Millisecond))
				loadRepos(b, e, repos, "-after-analyze")
				startConsumer(b, bin, e, repos, "-after-analyze")
				b.ReportMetric(float64(n), "relationships")
			}
		})
	}
}

// fillView imports the relationships of repos repos holding perRepo
// records each, as the consumer stores them, and returns their number.
func fillView(b *testing.B, c *spice.Client, repos, perRepo int) int {
	b.Helper()
	if repos == 0 {
		return 0
	}
	rules := view.DefaultRules()
	did := func(i int) string { return fmt.Sprintf("did:plc:bench%019d", i) }
	// One import stream per 1,000 repos (about 50,000 relationships): a
	// call is bounded in time.
	var stream grpc.ClientStreamingClient[v1.ImportBulkRelationshipsRequest, v1.ImportBulkRelationshipsResponse]
	var batch []*v1.Relationship
	sent, loaded := 0, 0
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if stream == nil {
			var err error
			if stream, err = c.API().ImportBulkRelationships(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
		if err := stream.Send(&v1.ImportBulkRelationshipsRequest{Relationships: batch}); err != nil {
			_, why := stream.CloseAndRecv() // the server's reason
			b.Fatalf("import: %v: %v", err, why)
		}
		sent += len(batch)
		batch = batch[:0]
	}
	closeStream := func() {
		flush()
		if stream == nil {
			return
		}
		resp, err := stream.CloseAndRecv()
		if err != nil {
			b.Fatalf("import: %v", err)
		}
		loaded += int(resp.GetNumLoaded())
		stream = nil
	}
	add := func(t view.Tuple) {
		batch = append(batch, c.ToV1(t))
		if len(batch) == 5000 {
			flush()
		}
	}
	for i := range repos {
		d := did(i)
		for k := range perRepo {
			other := did((i + k + 1) % repos)
			space := fmt.Sprintf("%s/s%d", d, k%4)
			w := testenv.Space("create", fmt.Sprintf("s%d", k), k == 1)
			switch {
			case k < 4:
			case k < 6:
				w = testenv.Group("create", fmt.Sprintf("g%d", k-4))
			case k%3 == 0:
				w = testenv.Relation("create", fmt.Sprintf("r%d", k), "space", space, "viewer", "acct", other, "")
			case k%3 == 1:
				w = testenv.Relation("create", fmt.Sprintf("r%d", k), "space", space, "viewer", "group", other+"/g0", "member")
			default:
				w = testenv.Relation("create", fmt.Sprintf("r%d", k), "group", d+"/g1", "direct_member", "acct", other, "")
			}
			tuples, err := rules.Project(d, w.Collection, w.RKey, w.Value)
			if err != nil || len(tuples) == 0 {
				b.Fatalf("record %s/%s of %s projects nothing: %v", w.Collection, w.RKey, d, err)
			}
			for _, t := range tuples {
				add(t)
				add(view.LineageTuple(t, view.RecordID(d, w.Collection, w.RKey)))
			}
		}
		add(view.RevTuple(d, fmt.Sprintf("3m%011d", i)))
		add(view.SourceTuple(d, pipeline.DefaultName))
		add(view.StatusTuple(d, "active", int64(i+1)))
		if (i+1)%1000 == 0 {
			closeStream()
		}
	}
	closeStream()
	if loaded != sent {
		b.Fatalf("import: %d relationships loaded, %d sent", loaded, sent)
	}
	return sent
}

// analyze runs ANALYZE on a database of the cluster.
func analyze(b *testing.B, uri string) {
	bin, err := pgtest.BinDir()
	if err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "ANALYZE", uri).CombinedOutput()
	if err != nil {
		b.Fatalf("ANALYZE: %v\n%s", err, out)
	}
}

// loadRepos times the read of the repo index (every repo:<did> tuple, in
// pages of 1,000, fully consistent) that the consumer makes at start.
func loadRepos(b *testing.B, e *testenv.Env, repos int, suffix string) {
	start := time.Now()
	got, err := spice.NewStore(e.Client).LoadRepos(b.Context(), "")
	if err != nil {
		b.Fatal(err)
	}
	if len(got) != repos {
		b.Fatalf("repo index: %d repos, want %d", len(got), repos)
	}
	took := time.Since(start)
	b.ReportMetric(took.Seconds(), "s-load-repo-index"+suffix)
	b.Logf("LoadRepos%s: %d repos in %v", suffix, len(got), took.Round(time.Millisecond))
}

// startConsumer starts the consumer binary on e's view and waits until it
// is ready, reporting the time and its memory (metric names end in suffix).
func startConsumer(b *testing.B, bin string, e *testenv.Env, repos int, suffix string) {
	port, _ := spicedbtest.FreePort()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"run", "--pds-url", e.PDS.URL(), "--spicedb-endpoint", e.SDB.Addr, "--spicedb-insecure",
		"--http-addr", addr, "--log-level", "info", "--log-format", "text"}
	start := time.Now()
	p, err := procs.Start(bin, args, []string{"CONSUMER_SPICEDB_TOKEN=" + e.Token},
		filepath.Join(b.TempDir(), "consumer.log"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = p.Stop(15 * time.Second) }()
	var peak int64
	deadline := time.Now().Add(10 * time.Minute)
	hc := &http.Client{Timeout: time.Second}
	for {
		_, hwm := procStatus(p.Cmd.Process.Pid)
		peak = max(peak, hwm)
		if resp, err := hc.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if !p.Running() || time.Now().After(deadline) {
			b.Fatalf("consumer not ready:\n%s", p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	ready := time.Since(start)
	b.StopTimer()
	rss, hwm := procStatus(p.Cmd.Process.Pid)
	atReady := max(peak, hwm)
	// The peak over the first 5 s of running (the index settles, the
	// garbage collector catches up).
	for range 50 {
		_, hwm := procStatus(p.Cmd.Process.Pid)
		peak = max(peak, hwm)
		time.Sleep(100 * time.Millisecond)
	}
	if !loggedRepos(p.Output(), repos) {
		b.Fatalf("the consumer did not log loading a repo index of %d repos:\n%s", repos, p.Output())
	}
	if err := p.Stop(15 * time.Second); err != nil {
		b.Fatalf("consumer stop: %v\n%s", err, p.Output())
	}
	b.ReportMetric(ready.Seconds(), "s-to-ready"+suffix)
	b.ReportMetric(float64(rss)/(1<<20), "RSS-at-ready-MB"+suffix)
	b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MB"+suffix)
	b.Logf("start%s: ready in %v (%s); RSS at ready %.1f MB (peak until then %.1f MB), peak over the next 5 s %.1f MB",
		suffix, ready.Round(time.Millisecond), startupSteps(p.Output()), float64(rss)/(1<<20), float64(atReady)/(1<<20),
		float64(peak)/(1<<20))
}

// startupSteps reads, from a text log, when the consumer logged its start
// steps, from its first line.
func startupSteps(log string) string {
	var first time.Time
	var out []string
	for _, line := range strings.Split(log, "\n") {
		ts, rest, ok := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if !ok || err != nil {
			continue
		}
		if first.IsZero() {
			first = t
		}
		for _, msg := range []string{"lease acquired", "repo index loaded", "stream connected"} {
			if strings.Contains(rest, `msg="`+msg+`"`) {
				out = append(out, fmt.Sprintf("%s at +%v", msg, t.Sub(first).Round(time.Millisecond)))
			}
		}
	}
	return strings.Join(out, ", ")
}

// loggedRepos reports whether a text log says the repo index loaded n repos.
func loggedRepos(log string, n int) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `msg="repo index loaded"`) && strings.Contains(line+" ", fmt.Sprintf(" repos=%d ", n)) {
			return true
		}
	}
	return false
}
