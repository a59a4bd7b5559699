package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/pgtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/procs"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/internal/tools/capture"
	"github.com/spaces-authz/spaces-authz/internal/tools/replay"
	"github.com/spaces-authz/spaces-authz/internal/tools/synth"
)

// synthCaptureOf returns a cached synthetic capture of n distinct frames over
// 1,000 repos, a share projected of whose commits touch projected records.
func synthCaptureOf(b *testing.B, n int, projected float64) string {
	b.Helper()
	cache, err := spicedbtest.CacheDir()
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(cache, "bench")
	_ = os.MkdirAll(dir, 0o755)
	path := filepath.Join(dir, fmt.Sprintf("synth-%d-p%g-seed1.zst", n, projected))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	tmp := path + ".tmp"
	if _, err := synth.Write(tmp, synth.Options{Events: n, Accounts: 1000, Seed: 1, Projected: projected}); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	return path
}

// scrape reads the value of every sample of a metric family (summed over
// its labels) from a consumer's /metrics.
func scrape(addr string, names ...string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, n := range names {
			if rest, ok := strings.CutPrefix(line, n); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
				f := strings.Fields(line)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				out[n] += v
			}
		}
	}
	return out, sc.Err()
}

// BenchmarkReplayDistinct replays a synthetic stream of distinct frames
// (every frame a new commit: no duplicates to skip) through the consumer
// binary into a real SpiceDB, on the memory datastore and on PostgreSQL,
// with 3 % and 50 % of commits touching projected records. It reports
// frames/s, relationship updates/s, the updates per projected one (all
// updates over data and lineage updates) and the binary's peak RSS. On the
// 3 % stream it also runs the consumer with every commit writing its own rev
// (`--rev-flush-after 0`, the behaviour before deferred revs) as the
// baseline of the same run, and with BENCH_BASELINE_BIN the binary of an
// earlier commit. BENCH_FRAMES sets the frames (default 100,000;
// BENCHMARKS.md uses 1,000,000 too).
//
//	go test ./cmd/consumer -run '^$' -bench ReplayDistinct -benchtime 1x
func BenchmarkReplayDistinct(b *testing.B) {
	parent := b
	n := 100000
	if s := os.Getenv("BENCH_FRAMES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	bin, err := procs.BuildConsumer(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	var cluster *pgtest.Cluster
	for _, ds := range testenv.Datastores {
		for _, projected := range []float64{0.03, 0.5} {
			modes := []string{"deferred"}
			if projected == 0.03 {
				modes = []string{"per-commit", "deferred"}
				if os.Getenv("BENCH_BASELINE_BIN") != "" {
					modes = append([]string{"before"}, modes...)
				}
			}
			for _, mode := range modes {
				name := fmt.Sprintf("datastore=%s/projected=%g%%/revs=%s", ds, projected*100, mode)
				b.Run(name, func(b *testing.B) {
					frames := loadFrames(b, n, projected)
					for range b.N {
						var e *testenv.Env
						if ds == testenv.Postgres {
							if cluster == nil {
								// Durable: PostgreSQL's defaults, fsync on.
								if cluster, err = pgtest.Start(context.Background(), pgtest.Options{Durable: true}); err != nil {
									b.Fatal(err)
								}
								parent.Cleanup(cluster.Remove)
							}
							sdb, _ := pgtest.SpiceDBOn(b, cluster)
							e = testenv.NewOnSpiceDB(b, sdb)
						} else {
							e = testenv.New(b)
						}
						replayDistinct(b, bin, e, frames, mode)
					}
				})
			}
		}
	}
}

func loadFrames(b *testing.B, n int, projected float64) []replay.Frame {
	b.Helper()
	raw, err := capture.ReadFile(synthCaptureOf(b, n, projected))
	if err != nil {
		b.Fatal(err)
	}
	frames, err := replay.Prepare(raw)
	if err != nil {
		b.Fatal(err)
	}
	return frames
}

// replayDistinct runs one replay: mode "deferred" (the default), "per-commit"
// (--rev-flush-after 0) or "before" (the binary $BENCH_BASELINE_BIN, built
// from an earlier commit: the same-run baseline of a change).
func replayDistinct(b *testing.B, bin string, e *testenv.Env, frames []replay.Frame, mode string) {
	srv, err := replay.New(frames, 1, "")
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	e.StoreCursor(synth.SeqBase - 1)
	port, _ := spicedbtest.FreePort()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"run", "--pds-url", srv.URL(), "--spicedb-endpoint", e.SDB.Addr, "--spicedb-insecure",
		"--http-addr", addr, "--log-level", "warn"}
	switch mode {
	case "per-commit":
		args = append(args, "--rev-flush-after", "0")
	case "before":
		bin = os.Getenv("BENCH_BASELINE_BIN")
	}
	p, err := procs.Start(bin, args, []string{"CONSUMER_SPICEDB_TOKEN=" + e.Token},
		filepath.Join(b.TempDir(), "consumer.log"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = p.Stop(15 * time.Second) }()
	// The rate is taken from the first frame served to the last event
	// applied (the watermark); the cursor is stored up to a flush later.
	var start, applied time.Time
	var peak int64
	deadline := time.Now().Add(20 * time.Minute)
	for {
		_, hwm := procStatus(p.Cmd.Process.Pid)
		peak = max(peak, hwm)
		if start.IsZero() && srv.Sent() > 0 {
			start = time.Now()
		}
		if applied.IsZero() && !start.IsZero() {
			if m, err := scrape(addr, "spaces_authz_watermark_seq"); err == nil && int64(m["spaces_authz_watermark_seq"]) >= srv.LastSeq() {
				applied = time.Now()
			}
		}
		st, err := e.Client.ReadProjector(b.Context(), "default")
		if err == nil && st.Progress.Cursor >= srv.LastSeq() {
			if applied.IsZero() {
				applied = time.Now()
			}
			break
		}
		if !p.Running() || time.Now().After(deadline) {
			b.Fatalf("consumer did not reach seq %d (cursor %d):\n%s", srv.LastSeq(), st.Progress.Cursor, p.Output())
		}
		time.Sleep(25 * time.Millisecond)
	}
	stored := time.Now()
	took := applied.Sub(start)
	m, err := scrape(addr, "spaces_authz_spicedb_relationship_updates_total", "spaces_authz_spicedb_repo_bookkeeping_updates_total",
		"spaces_authz_duplicate_events_total", "spaces_authz_resyncs_total", "spaces_authz_spicedb_write_batch_updates_sum",
		"spaces_authz_spicedb_write_batch_updates_count")
	if err != nil {
		b.Fatal(err)
	}
	if m["spaces_authz_duplicate_events_total"] != 0 {
		b.Fatalf("%v duplicates in a stream of distinct frames", m["spaces_authz_duplicate_events_total"])
	}
	total, repo := m["spaces_authz_spicedb_relationship_updates_total"], m["spaces_authz_spicedb_repo_bookkeeping_updates_total"]
	data := total - repo
	fps := float64(srv.Total()) / took.Seconds()
	b.ReportMetric(fps, "frames/s")
	b.ReportMetric(total/took.Seconds(), "updates/s")
	b.ReportMetric(total, "updates")
	b.ReportMetric(total/max(data, 1), "updates/data-update")
	b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MB")
	writes := m["spaces_authz_spicedb_write_batch_updates_count"]
	b.Logf("%d frames applied in %v (cursor stored %v later): %.0f frames/s; %.0f updates (%.0f data and lineage, %.0f repo bookkeeping, %.2f× the data), %.0f updates/s in %.0f writes; %.0f resyncs; peak RSS %.1f MB",
		srv.Total(), took.Round(time.Millisecond), stored.Sub(applied).Round(time.Millisecond), fps, total, data, repo, total/max(data, 1), total/took.Seconds(),
		writes, m["spaces_authz_resyncs_total"], float64(peak)/(1<<20))
}
