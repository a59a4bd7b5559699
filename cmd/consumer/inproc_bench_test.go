package main

import (
	"cmp"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/internal/tools/replay"
	"github.com/spaces-authz/spaces-authz/internal/tools/synth"
)

// BenchmarkReplayInProcess replays a synthetic capture of 100,000 distinct
// frames through an in-process consumer, for CPU and memory profiles of the
// whole path. BENCH_PROJECTED sets the share of projected commits (default
// 0.03) and BENCH_DATASTORE the datastore (memory or postgres).
//
//	BENCH_PROJECTED=0.5 go test ./cmd/consumer -run '^$' -bench ReplayInProcess -benchtime 1x -cpuprofile cpu.out
func BenchmarkReplayInProcess(b *testing.B) {
	projected := 0.03
	if s := os.Getenv("BENCH_PROJECTED"); s != "" {
		var err error
		if projected, err = strconv.ParseFloat(s, 64); err != nil {
			b.Fatal(err)
		}
	}
	ds := testenv.Datastore(cmp.Or(os.Getenv("BENCH_DATASTORE"), string(testenv.Memory)))
	frames := loadFrames(b, 100000, projected)
	for range b.N {
		srv, err := replay.New(frames, 1, "")
		if err != nil {
			b.Fatal(err)
		}
		e := testenv.NewOn(b, ds)
		e.StoreCursor(synth.SeqBase - 1)
		start := time.Now()
		r := e.Start(func(c *pipeline.Config) {
			c.PDSURL, c.Registry, c.Engine.FlushEvery = srv.URL(), prometheus.NewRegistry(), time.Second
		})
		for r.Snapshot().Watermark < srv.LastSeq() {
			time.Sleep(50 * time.Millisecond)
		}
		took := time.Since(start)
		_ = r.Stop()
		_ = srv.Close()
		b.ReportMetric(float64(srv.Total())/took.Seconds(), "frames/s")
	}
}
