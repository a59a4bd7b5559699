package main

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/internal/tools/capture"
	"github.com/spaces-authz/spaces-authz/internal/tools/replay"
	"github.com/spaces-authz/spaces-authz/internal/tools/synth"
)

// BenchmarkReplayInProcess replays a looped synthetic capture through an
// in-process consumer (for CPU profiles of the whole path).
func BenchmarkReplayInProcess(b *testing.B) {
	raw, err := capture.ReadFile(synthCapture(b, 100000))
	if err != nil {
		b.Fatal(err)
	}
	frames, _ := replay.Prepare(raw)
	for range b.N {
		srv, err := replay.New(frames, 2, "")
		if err != nil {
			b.Fatal(err)
		}
		e := testenv.New(b)
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
