package firehose

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
)

// The streaming snapshot reader must return exactly what the old reader
// (indigo's LoadRepoFromCAR, everything in memory; snapshot_old_test.go)
// returns: the same records in the same order with the same per-record
// errors, and an error where it errs. Repos are real signed repos built
// with indigo by fakepds, read whole and filtered, with blocks omitted,
// corrupted and shuffled, and read again with budgets so small that the
// scan paths (blocks the index could not hold) do all the work.

var snapKeeps = []struct {
	name string
	keep func(string) bool
}{
	{"all", nil},
	{"projected", genProjected},
	{"relation", func(c string) bool { return c == "com.atproto.space.relation" }},
	{"none", func(string) bool { return false }},
	{"posts", func(c string) bool { return c == "app.bsky.feed.post" }},
	// Collections whose names sort next to projected ones, and the first
	// and last collections of the repo.
	{"neighbours", func(c string) bool {
		return c == "com.atproto.space.spaceship" || c == "com.atproto.space.relatio" ||
			c == "aaa.first.coll" || c == "zzz.last.coll" || c == "app.bsky.actor.profile"
	}},
}

var snapLimits = []struct {
	name string
	lim  snapshotLimits
}{
	{"default", defaultSnapshotLimits},
	// Room for 40 blocks: records are dropped, then nodes overflow.
	{"tiny-index", snapshotLimits{indexBytes: 40 * idxEntryBytes, maxNodes: MaxMSTNodes, maxPending: maxPendingNodes, maxRecords: DefaultMaxRepoRecords}},
	// No index at all, and a scan every 3 pending nodes.
	{"no-index", snapshotLimits{indexBytes: 0, maxNodes: MaxMSTNodes, maxPending: 3, maxRecords: DefaultMaxRepoRecords}},
}

func snapValue(coll string, i int) map[string]any {
	v := map[string]any{"$type": coll, "n": int64(i), "createdAt": "2026-01-01T00:00:00Z"}
	switch coll {
	case "com.atproto.space.space":
		v["displayName"], v["bubble"] = fmt.Sprintf("space %d", i), i%3 == 0
	case "com.atproto.space.relation":
		v["resource"], v["permission"], v["subject"] = fmt.Sprintf("s%d", i%17), "member", fakepds.PLCDID(fmt.Sprint(i))
	case "app.bsky.feed.post":
		v["text"] = strings.Repeat("x", (i%300+300)%300)
	}
	return v
}

func snapWrite(coll, rkey string, i int) fakepds.Write {
	return fakepds.Write{Action: "create", Collection: coll, RKey: rkey, Value: snapValue(coll, i)}
}

// mixedRepo has thousands of records across projected and unprojected
// collections, with deletes and updates in its history.
func mixedRepo(t testing.TB, name string) *fakepds.Repo {
	t.Helper()
	r, err := fakepds.NewRepo(fakepds.PLCDID(name))
	if err != nil {
		t.Fatal(err)
	}
	clock := syntax.NewTIDClock(7)
	counts := []struct {
		coll string
		n    int
	}{
		{"app.bsky.feed.post", 3000}, {"app.bsky.feed.like", 400}, {"app.bsky.graph.follow", 200},
		{"com.atproto.space.space", 60}, {"com.atproto.space.group", 30}, {"com.atproto.space.relation", 250},
		{"com.atproto.space.spaceship", 20}, {"com.atproto.space.relatio", 20},
		{"aaa.first.coll", 10}, {"zzz.last.coll", 10},
	}
	var writes []fakepds.Write
	i := 0
	for _, c := range counts {
		for range c.n {
			writes = append(writes, snapWrite(c.coll, clock.Next().String(), i))
			i++
		}
	}
	writes = append(writes, snapWrite("app.bsky.actor.profile", "self", i))
	rng := rand.New(rand.NewPCG(3, 4))
	rng.Shuffle(len(writes), func(a, b int) { writes[a], writes[b] = writes[b], writes[a] })
	for len(writes) > 0 {
		n := min(len(writes), 700)
		if _, err := r.Apply(writes[:n]...); err != nil {
			t.Fatal(err)
		}
		// Delete and update a few of each batch.
		var more []fakepds.Write
		for k := 0; k < n; k += 97 {
			w := writes[k]
			if k%2 == 0 {
				more = append(more, fakepds.Write{Action: "delete", Collection: w.Collection, RKey: w.RKey})
			} else {
				more = append(more, fakepds.Write{Action: "update", Collection: w.Collection, RKey: w.RKey, Value: snapValue(w.Collection, -k)})
			}
		}
		if _, err := r.Apply(more...); err != nil {
			t.Fatal(err)
		}
		writes = writes[n:]
	}
	return r
}

func exportCAR(t testing.TB, r *fakepds.Repo) []byte {
	t.Helper()
	b, err := r.Export()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type snapCase struct {
	name string
	car  []byte
	// What the old reader must do with it (keep=nil), so that a case is
	// what it claims to be: refuse it, or report records with this reason.
	oldErr    bool
	oldReason string
}

func snapCases(t testing.TB) []snapCase {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	var cases []snapCase

	empty, err := fakepds.NewRepo(fakepds.PLCDID("snap-empty"))
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, snapCase{name: "empty", car: exportCAR(t, empty)})

	small, err := fakepds.NewRepo(fakepds.PLCDID("snap-small"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := small.Apply(snapWrite("com.atproto.space.space", "a", 1), snapWrite("com.atproto.space.space", "b", 2),
		snapWrite("app.bsky.feed.post", "p", 3)); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, snapCase{name: "small", car: exportCAR(t, small)})

	mixed := mixedRepo(t, "snap-mixed")
	mixedCAR := exportCAR(t, mixed)
	cases = append(cases, snapCase{name: "mixed", car: mixedCAR},
		snapCase{name: "mixed shuffled", car: shuffleCAR(t, mixedCAR, rng)})

	// Record blocks missing from the CAR, projected and not.
	omitted := 0
	for p := range mixed.Records() {
		if omitted < 12 && (strings.HasPrefix(p, "com.atproto.space.") || strings.HasPrefix(p, "app.bsky.feed.post/")) {
			mixed.OmitFromExport(p, true)
			omitted++
		}
	}
	omitCAR := exportCAR(t, mixed)
	cases = append(cases, snapCase{name: "missing blocks", car: omitCAR, oldReason: ReasonMissingBlock},
		snapCase{name: "missing blocks shuffled", car: shuffleCAR(t, omitCAR, rng), oldReason: ReasonMissingBlock})

	// Records that don't decode, and two paths with the same block.
	bad, err := fakepds.NewRepo(fakepds.PLCDID("snap-bad"))
	if err != nil {
		t.Fatal(err)
	}
	deep := bytes.Repeat([]byte{0x81}, 40)
	deep = append([]byte{0xa1, 0x61, 'x'}, append(deep, 0x01)...)
	if _, err := bad.Apply(
		fakepds.Write{Action: "create", Collection: "com.atproto.space.space", RKey: "junk", RawValue: []byte{0xff}},
		fakepds.Write{Action: "create", Collection: "com.atproto.space.relation", RKey: "deep", RawValue: deep},
		fakepds.Write{Action: "create", Collection: "com.atproto.space.group", RKey: "array", RawValue: []byte{0x82, 0x01, 0x02}},
		fakepds.Write{Action: "create", Collection: "app.bsky.feed.post", RKey: "junk", RawValue: []byte{0xff}},
		snapWrite("com.atproto.space.space", "same1", 9), snapWrite("com.atproto.space.space", "same2", 9),
		snapWrite("com.atproto.space.relation", "same3", 9), snapWrite("app.bsky.feed.post", "ok", 10),
	); err != nil {
		t.Fatal(err)
	}
	badCAR := exportCAR(t, bad)
	cases = append(cases, snapCase{name: "malformed records", car: badCAR, oldReason: ReasonMalformedRec},
		snapCase{name: "malformed records shuffled", car: shuffleCAR(t, badCAR, rng), oldReason: ReasonMalformedRec})

	only, err := fakepds.NewRepo(fakepds.PLCDID("snap-only"))
	if err != nil {
		t.Fatal(err)
	}
	var rels []fakepds.Write
	clock := syntax.NewTIDClock(1)
	for i := range 2000 {
		rels = append(rels, snapWrite("com.atproto.space.relation", clock.Next().String(), i))
	}
	if _, err := only.Apply(rels...); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, snapCase{name: "only projected shuffled", car: shuffleCAR(t, exportCAR(t, only), rng)})

	// A real getRepo export (the relay corpus), as a PDS orders it.
	real, err := os.ReadFile(filepath.Join(corpusDir, "repo.car"))
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, snapCase{name: "corpus repo.car", car: real},
		snapCase{name: "corpus repo.car shuffled", car: shuffleCAR(t, real, rng)})

	// Blocks that don't hash to their CID: go-car (so the old reader)
	// refuses the whole CAR, whichever block it is.
	flip := func(pick func(s *carSection) bool) []byte {
		done := false
		return editCAR(t, mixedCAR, func(s *carSection) bool {
			if !done && pick(s) {
				s.data = bytes.Clone(s.data)
				s.data[len(s.data)/2] ^= 0x20
				done = true
			}
			return true
		})
	}
	recordOf := func(coll string) func(s *carSection) bool {
		return func(s *carSection) bool { return bytes.Contains(s.data, []byte(coll)) && !looksLikeMSTNode(s.data) }
	}
	cases = append(cases,
		snapCase{name: "corrupt projected record", car: flip(recordOf("com.atproto.space.relation")), oldErr: true},
		snapCase{name: "corrupt post", car: flip(recordOf("app.bsky.feed.post")), oldErr: true},
		snapCase{name: "corrupt MST node", car: flip(func(s *carSection) bool { return looksLikeMSTNode(s.data) }), oldErr: true})

	// Structural damage.
	_, secs := splitCAR(t, mixedCAR)
	commitCID := secs[0].c // fakepds writes the commit first
	cases = append(cases,
		snapCase{name: "truncated", car: mixedCAR[:len(mixedCAR)*2/3], oldErr: true},
		snapCase{name: "no commit block", car: editCAR(t, mixedCAR, func(s *carSection) bool { return !s.c.Equals(commitCID) }), oldErr: true},
		snapCase{name: "no MST", car: editCAR(t, mixedCAR, func(s *carSection) bool { return !looksLikeMSTNode(s.data) }), oldErr: true},
		snapCase{name: "commit not a commit", car: editCAR(t, mixedCAR, func(s *carSection) bool {
			if s.c.Equals(commitCID) {
				s.data = secs[len(secs)-1].data
				s.c, _ = genPrefix.Sum(s.data)
			}
			return true
		}), oldErr: true},
	)
	return cases
}

// sameSnapshot reads car with both readers and reports any difference.
func sameSnapshot(t *testing.T, car []byte, keep func(string) bool, lim snapshotLimits) (*Snapshot, *snapshotStats) {
	t.Helper()
	want, werr := oldReadRepoCAR(t.Context(), car, keep)
	return want, sameAs(t, want, werr, car, keep, lim)
}

// sameAs reads car with the new reader and compares with the old reader's
// result.
func sameAs(t *testing.T, want *Snapshot, werr error, car []byte, keep func(string) bool, lim snapshotLimits) *snapshotStats {
	t.Helper()
	got, st, gerr := readSnapshotStats(t.Context(), bytes.NewReader(car), bytes.NewReader(car), keep, lim)
	switch {
	case werr != nil && gerr == nil:
		t.Errorf("old reader refuses it (%v), new one reads %d records", werr, len(got.Records))
	case werr == nil && gerr != nil:
		t.Errorf("old reader reads %d records, new one refuses it: %v", len(want.Records), gerr)
	case werr == nil && !reflect.DeepEqual(want, got):
		t.Errorf("snapshots differ:\nold %s %s %s %v\nnew %s %s %s %v", want.DID, want.Rev, want.Commit, sortedPaths(want),
			got.DID, got.Rev, got.Commit, sortedPaths(got))
		for i := range min(len(want.Records), len(got.Records)) {
			if !reflect.DeepEqual(want.Records[i], got.Records[i]) {
				t.Errorf("first difference: record %d: old %+v (err %v), new %+v (err %v)", i,
					want.Records[i], want.Records[i].Err, got.Records[i], got.Records[i].Err)
				break
			}
		}
	}
	return st
}

// cachedSnapCases builds the cases once for the tests that share them.
func cachedSnapCases(t *testing.T) []snapCase {
	snapCaseCache.Lock()
	defer snapCaseCache.Unlock()
	if snapCaseCache.cases == nil {
		snapCaseCache.cases = snapCases(t)
	}
	return snapCaseCache.cases
}

var snapCaseCache struct {
	sync.Mutex
	cases []snapCase
}

func TestSnapshotMatchesOldReader(t *testing.T) {
	cases := cachedSnapCases(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The case is what it claims to be.
			old, oerr := oldReadRepoCAR(t.Context(), c.car, nil)
			if c.oldErr != (oerr != nil) {
				t.Fatalf("old reader: %v, want an error: %v", oerr, c.oldErr)
			}
			if c.oldReason != "" {
				n := 0
				for _, r := range old.Records {
					if r.Err != nil && r.Err.Reason == c.oldReason {
						n++
					}
				}
				if n == 0 {
					t.Fatalf("old reader reports no %s record", c.oldReason)
				}
			}
			for _, k := range snapKeeps {
				want, werr := old, oerr
				if k.keep != nil {
					want, werr = oldReadRepoCAR(t.Context(), c.car, k.keep)
				}
				for _, l := range snapLimits {
					t.Run(k.name+"/"+l.name, func(t *testing.T) {
						st := sameAs(t, want, werr, c.car, k.keep, l.lim)
						// The small budgets really do send the reader to its scans.
						if l.name == "no-index" && oerr == nil && st.visited > 0 && st.nodeScans == 0 {
							t.Errorf("no node scan with no index: %+v", st)
						}
					})
				}
			}
		})
	}
}

// TestSnapshotGetRepoMatchesOldReader reads the same CARs over HTTP with
// GetRepo (spooled to a temp file) and compares with the old GetRepo.
func TestSnapshotGetRepoMatchesOldReader(t *testing.T) {
	cases := cachedSnapCases(t)
	var current []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(current)
	}))
	defer srv.Close()
	tmp := t.TempDir()
	c, err := NewSyncClient(SyncConfig{URL: srv.URL, TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range cases {
		current = sc.car
		old, oerr := oldGetRepoBody(t.Context(), bytes.NewReader(sc.car), DefaultMaxRepoBytes, genProjected)
		did := fakepds.PLCDID("nobody")
		if oerr == nil {
			did = old.DID
		}
		got, gerr := c.GetRepo(t.Context(), did, genProjected)
		switch {
		case (oerr == nil) != (gerr == nil):
			t.Errorf("%s: old %v, new %v", sc.name, oerr, gerr)
		case oerr == nil && !reflect.DeepEqual(old, got):
			t.Errorf("%s: snapshots differ:\nold %v\nnew %v", sc.name, sortedPaths(old), sortedPaths(got))
		}
	}
	// Nothing is left in the temp dir.
	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("temp dir holds %v (%v)", left, err)
	}
}

// TestSnapshotVisitsOnlyNeededSubtrees: with few projected records among
// many posts, the walk reads a small part of the MST and needs no scan.
func TestSnapshotVisitsOnlyNeededSubtrees(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repo.car")
	records, nodes := genRepoCAR(t, path, genSpec{did: fakepds.PLCDID("gen"), bytes: 8 << 20, padding: 600, projected: 40})
	car, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, st := sameSnapshot(t, car, genProjected, defaultSnapshotLimits)
	if len(want.Records) != 40 {
		t.Fatalf("%d projected records, want 40", len(want.Records))
	}
	if st.visited*10 > nodes || st.nodeScans != 0 || st.recordScans != 0 || !st.indexComplete {
		t.Errorf("%d records, %d MST nodes: %+v; want under a tenth of the nodes visited, no scans", records, nodes, st)
	}
	// With no index, scans number about the depth of the tree, not the
	// nodes: one per level, and one for the records.
	_, st = sameSnapshot(t, car, genProjected, snapshotLimits{maxNodes: MaxMSTNodes, maxPending: maxPendingNodes, maxRecords: DefaultMaxRepoRecords})
	if st.nodeScans > 12 || st.recordScans != 1 {
		t.Errorf("no index: %+v; want at most 12 node scans and 1 record scan", st)
	}
}

// TestGetRepoDoesNotHoldTheCAR: reading a 24 MB repo with 40 projected
// records allocates far less than the CAR in all (the old reader allocated
// it twice over). Allocation counts are deterministic: this is not a timing.
func TestGetRepoDoesNotHoldTheCAR(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repo.car")
	did := fakepds.PLCDID("gen")
	genRepoCAR(t, path, genSpec{did: did, bytes: 24 << 20, padding: 1500, projected: 40})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, path)
	}))
	defer srv.Close()
	c, err := NewSyncClient(SyncConfig{URL: srv.URL, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	snap, err := c.GetRepo(context.Background(), did, genProjected)
	runtime.ReadMemStats(&after)
	if err != nil || len(snap.Records) != 40 {
		t.Fatalf("GetRepo: %v", err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("CAR %d bytes, allocated %d bytes", fi.Size(), alloc)
	if alloc > uint64(fi.Size())/4 {
		t.Errorf("GetRepo allocated %d bytes for a %d byte CAR; want under a quarter of it", alloc, fi.Size())
	}
}
