package firehose

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"testing"

	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
)

// FuzzReadRepoCAR feeds arbitrary bytes (seeded with real exports, a
// shuffled one and broken ones) to the snapshot reader. It must not panic,
// must allocate within a bound that does not depend on what the input
// claims, and must read the same with its scan paths as with its index.
// What it reads, the old reader reads the same.
func FuzzReadRepoCAR(f *testing.F) {
	real, err := os.ReadFile(filepath.Join(corpusDir, "repo.car"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(real)
	r, err := fakepds.NewRepo(fakepds.PLCDID("fuzz"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(exportCAR(f, r))
	if _, err := r.Apply(snapWrite("com.atproto.space.space", "a", 1), snapWrite("app.bsky.feed.post", "b", 2),
		snapWrite("com.atproto.space.relation", "c", 3), snapWrite("aaa.first.coll", "d", 4),
		fakepds.Write{Action: "create", Collection: "com.atproto.space.group", RKey: "e", RawValue: []byte{0xff}}); err != nil {
		f.Fatal(err)
	}
	small := exportCAR(f, r)
	f.Add(small)
	r.OmitFromExport("com.atproto.space.space/a", true)
	f.Add(shuffleCAR(f, exportCAR(f, r), newTestRand()))
	f.Add(small[:len(small)/2])

	tiny := snapshotLimits{indexBytes: 2 * idxEntryBytes, maxNodes: MaxMSTNodes, maxPending: 2, maxRecords: DefaultMaxRepoRecords}
	ctx := context.Background()
	read := func(t *testing.T, b []byte, keep func(string) bool) (*Snapshot, error) {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		got, err := readSnapshot(ctx, bytes.NewReader(b), bytes.NewReader(b), keep, defaultSnapshotLimits)
		runtime.ReadMemStats(&m1)
		if a := m1.TotalAlloc - m0.TotalAlloc; a > 8<<20+64*uint64(len(b)) {
			t.Fatalf("%d bytes allocated for a %d byte input", a, len(b))
		}
		got2, err2 := readSnapshot(ctx, bytes.NewReader(b), bytes.NewReader(b), keep, tiny)
		if (err == nil) != (err2 == nil) || (err == nil && !reflect.DeepEqual(got, got2)) {
			t.Fatalf("index and scans disagree: %v / %v", err, err2)
		}
		return got, err
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		all, err := read(t, b, nil)
		proj, perr := read(t, b, genProjected)
		if err != nil {
			return
		}
		old, oerr := oldReadRepoCAR(ctx, b, nil)
		if oerr != nil || !reflect.DeepEqual(old, all) {
			t.Fatalf("read %v; the old reader: %v %v", sortedPaths(all), oerr, old)
		}
		// Pruning drops no kept record.
		want := *all
		want.Records = nil
		for _, r := range all.Records {
			if genProjected(r.Collection) {
				want.Records = append(want.Records, r)
			}
		}
		if perr != nil || !reflect.DeepEqual(&want, proj) {
			t.Fatalf("projected: %v %v, want %v", perr, proj, sortedPaths(&want))
		}
	})
}

func newTestRand() *rand.Rand { return rand.New(rand.NewPCG(7, 8)) }
