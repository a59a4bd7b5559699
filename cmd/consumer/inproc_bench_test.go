package main

import (
	"cmp"
	"os"
	"runtime"
	"runtime/pprof"
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
// 0.03), BENCH_DATASTORE the datastore (memory or postgres), BENCH_FRAMES
// the frames, and BENCH_HEAP_PROFILE a file for a heap profile taken at 80 %
// of the stream.
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
	n := 100000
	if s := os.Getenv("BENCH_FRAMES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	frames := loadFrames(b, n, projected)
	heapAt := os.Getenv("BENCH_HEAP_PROFILE") // write a heap profile here at 80 % of the stream
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
		first := srv.LastSeq() - int64(len(frames))
		for r.Snapshot().Watermark < srv.LastSeq() {
			if heapAt != "" && r.Snapshot().Watermark > first+int64(len(frames))*8/10 {
				writeHeapProfile(b, heapAt)
				heapAt = ""
			}
			time.Sleep(50 * time.Millisecond)
		}
		took := time.Since(start)
		_ = r.Stop()
		_ = srv.Close()
		b.ReportMetric(float64(srv.Total())/took.Seconds(), "frames/s")
	}
}

func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}
