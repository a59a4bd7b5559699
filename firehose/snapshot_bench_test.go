package firehose

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
)

// BenchmarkGetRepoPeakHeap reads big repos (50 projected records among
// posts padded to ~1.6 KB each) with GetRepo over HTTP, and reports how far
// the heap (runtime HeapInuse, sampled every millisecond) rose above where
// it stood before the call: "peak-heap-MB". The old reader (whole body in
// memory, indigo's LoadRepoFromCAR) is the baseline on the 100 MB repo.
//
// The CARs are generated into the benchmark's temp dir (genRepoCAR: a real
// MST built with indigo, a signed commit, blocks in a scrambled order). The
// 1 GB case takes about a minute to build and ~1 GB of disk, so it runs
// only with SNAPSHOT_BENCH_1GB=1:
//
//	go test ./firehose -run '^$' -bench GetRepoPeakHeap -benchtime 3x
//	SNAPSHOT_BENCH_1GB=1 go test ./firehose -run '^$' -bench GetRepoPeakHeap -benchtime 3x -timeout 30m
func BenchmarkGetRepoPeakHeap(b *testing.B) {
	sizes := []struct {
		name  string
		bytes int64
		old   bool
		optIn bool
	}{
		{"100MB", 100 << 20, true, false},
		{"1GB", 1 << 30, false, true},
	}
	did := fakepds.PLCDID("bench")
	for _, sz := range sizes {
		if sz.optIn && os.Getenv("SNAPSHOT_BENCH_1GB") == "" {
			b.Logf("%s: skipped (set SNAPSHOT_BENCH_1GB=1)", sz.name)
			continue
		}
		dir := b.TempDir()
		path := filepath.Join(dir, "repo.car")
		start := time.Now()
		records, nodes := genRepoCAR(b, path, genSpec{did: did, bytes: sz.bytes, padding: 1500, projected: 50})
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%s: %d bytes, %d records, %d MST nodes, built in %v", sz.name, fi.Size(), records, nodes,
			time.Since(start).Round(time.Millisecond))
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeFile(w, r, path)
		}))
		c, err := NewSyncClient(SyncConfig{URL: srv.URL, MaxRepoBytes: 2 << 30, TempDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		check := func(b *testing.B, snap *Snapshot, err error) {
			if err != nil || len(snap.Records) != 50 {
				b.Fatalf("read: %v", err)
			}
		}
		b.Run("new/"+sz.name, func(b *testing.B) {
			peak := 0.0
			for range b.N {
				peak = max(peak, peakHeapRise(func() {
					snap, err := c.GetRepo(context.Background(), did, genProjected)
					check(b, snap, err)
				}))
			}
			b.ReportMetric(peak/(1<<20), "peak-heap-MB")
			b.ReportMetric(float64(fi.Size())/(1<<20), "CAR-MB")
		})
		if sz.old {
			b.Run("old/"+sz.name, func(b *testing.B) {
				peak := 0.0
				for range b.N {
					peak = max(peak, peakHeapRise(func() {
						resp, err := http.Get(srv.URL)
						if err != nil {
							b.Fatal(err)
						}
						defer resp.Body.Close()
						snap, err := oldGetRepoBody(context.Background(), resp.Body, 2<<30, genProjected)
						check(b, snap, err)
					}))
				}
				b.ReportMetric(peak/(1<<20), "peak-heap-MB")
				b.ReportMetric(float64(fi.Size())/(1<<20), "CAR-MB")
			})
		}
		srv.Close()
	}
}

// peakHeapRise runs fn and returns the highest HeapInuse (heap spans in
// use: live and not yet collected objects, and their spans' free space)
// seen while it ran, minus HeapInuse before it, after a GC.
func peakHeapRise(fn func()) float64 {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	inuse := func() float64 {
		metrics.Read(samples)
		return float64(samples[0].Value.Uint64() + samples[1].Value.Uint64())
	}
	runtime.GC()
	base := inuse()
	peak := base
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			peak = max(peak, inuse())
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	fn()
	close(stop)
	wg.Wait()
	return max(peak, inuse()) - base
}
