package firehose

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
)

// TestGetRepoRefusesTooManyProjectedRecords: the records a snapshot keeps
// are decoded and held while the repo is diffed, so they are what its
// memory grows with; a repo with more of them than MaxRepoRecords is
// refused like one over MaxRepoBytes. Before the cap, a 41.5 MB repo of
// 200,000 relation records raised the reader's peak heap by 287 MB, and
// nothing stopped a hostile user at 512 MiB of CAR (~2.5 M records).
func TestGetRepoRefusesTooManyProjectedRecords(t *testing.T) {
	did := fakepds.PLCDID("many")
	dir := t.TempDir()
	path := filepath.Join(dir, "repo.car")
	genRepoCAR(t, path, genSpec{did: did, bytes: 1 << 10, padding: 10, projected: 1200})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, path) }))
	defer srv.Close()
	read := func(limit int) (*Snapshot, error) {
		c, err := NewSyncClient(SyncConfig{URL: srv.URL, TempDir: dir, MaxRepoRecords: limit})
		if err != nil {
			t.Fatal(err)
		}
		return c.GetRepo(context.Background(), did, genProjected)
	}
	if _, err := read(1000); !errors.Is(err, ErrRepoTooLarge) || !strings.Contains(err.Error(), "1000 records") {
		t.Fatalf("1,200 projected records under a limit of 1,000: %v", err)
	}
	snap, err := read(1200)
	if err != nil || len(snap.Records) != 1200 {
		t.Fatalf("1,200 projected records at a limit of 1,200: %v", err)
	}
	// Unprojected records don't count: the same repo read for posts only.
	c, err := NewSyncClient(SyncConfig{URL: srv.URL, TempDir: dir, MaxRepoRecords: 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetRepo(context.Background(), did, func(string) bool { return false }); err != nil {
		t.Fatalf("no collection read, limit 10: %v", err)
	}
}

// BenchmarkGetRepoPeakHeapProjected reports the reader's peak heap for a
// repo made of projected records only (small relation-like records, the
// worst case for memory per CAR byte), at the default cap: what one
// resync may hold at most, before the engine's diff.
//
//	go test ./firehose -run '^$' -bench GetRepoPeakHeapProjected -benchtime 1x
func BenchmarkGetRepoPeakHeapProjected(b *testing.B) {
	did := fakepds.PLCDID("projected")
	dir := b.TempDir()
	path := filepath.Join(dir, "repo.car")
	n := DefaultMaxRepoRecords
	genRepoCAR(b, path, genSpec{did: did, bytes: 1, padding: 10, projected: n})
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, path) }))
	defer srv.Close()
	c, err := NewSyncClient(SyncConfig{URL: srv.URL, TempDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	peak := 0.0
	for range b.N {
		peak = max(peak, peakHeapRise(func() {
			snap, err := c.GetRepo(context.Background(), did, genProjected)
			if err != nil || len(snap.Records) != n {
				b.Fatalf("read: %v", err)
			}
		}))
	}
	b.ReportMetric(peak/(1<<20), "peak-heap-MB")
	b.ReportMetric(peak/float64(n), "heap-B/record")
	b.ReportMetric(float64(fi.Size())/(1<<20), "CAR-MB")
}
