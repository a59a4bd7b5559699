package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/procs"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/internal/tools/capture"
	"github.com/spaces-authz/spaces-authz/internal/tools/replay"
	"github.com/spaces-authz/spaces-authz/internal/tools/synth"
)

// synthCapture returns a cached synthetic capture of n frames (3 % of
// commits projected).
func synthCapture(b *testing.B, n int) string { return synthCaptureOf(b, n, 0.03) }

// procStatus reads VmRSS and VmHWM (peak RSS) of a process, in bytes.
func procStatus(pid int) (rss, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	return rss, hwm
}

// BenchmarkReplayMillionFramesRSS replays 1,000,000 frames (a 100,000-frame
// synthetic capture looped 10 times, seqs rewritten) through the consumer
// binary into a real SpiceDB and reports its peak RSS (target ≤ 150 MB,
// DESIGN §10) and the frame rate.
//
//	go test ./cmd/consumer -run '^$' -bench ReplayMillionFramesRSS -benchtime 1x
func BenchmarkReplayMillionFramesRSS(b *testing.B) {
	raw, err := capture.ReadFile(synthCapture(b, 100000))
	if err != nil {
		b.Fatal(err)
	}
	frames, err := replay.Prepare(raw)
	if err != nil {
		b.Fatal(err)
	}
	bin, err := procs.BuildConsumer(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		srv, err := replay.New(frames, 10, "")
		if err != nil {
			b.Fatal(err)
		}
		e := testenv.New(b)
		e.StoreCursor(synth.SeqBase - 1)
		port, _ := spicedbtest.FreePort()
		p, err := procs.Start(bin, []string{"run", "--pds-url", srv.URL(), "--spicedb-endpoint", e.SDB.Addr,
			"--spicedb-insecure", "--http-addr", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "warn"},
			[]string{"CONSUMER_SPICEDB_TOKEN=" + e.Token}, filepath.Join(b.TempDir(), "consumer.log"), nil)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		var peak, lastRSS int64
		deadline := time.Now().Add(15 * time.Minute)
		for {
			rss, hwm := procStatus(p.Cmd.Process.Pid)
			peak, lastRSS = max(peak, hwm), rss
			st, err := e.Client.ReadProjector(b.Context(), "default")
			if err == nil && st.Progress.Cursor >= srv.LastSeq() {
				break
			}
			if !p.Running() || time.Now().After(deadline) {
				b.Fatalf("consumer did not reach seq %d (cursor %d):\n%s", srv.LastSeq(), st.Progress.Cursor, p.Output())
			}
			time.Sleep(200 * time.Millisecond)
		}
		took := time.Since(start)
		_ = p.Stop(15 * time.Second)
		_ = srv.Close()
		b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MB")
		b.ReportMetric(float64(srv.Total())/took.Seconds(), "frames/s")
		b.Logf("%d frames replayed in %v (%.0f frames/s); peak RSS %.1f MB, RSS at the end %.1f MB",
			srv.Total(), took.Round(time.Millisecond), float64(srv.Total())/took.Seconds(), float64(peak)/(1<<20),
			float64(lastRSS)/(1<<20))
	}
}
