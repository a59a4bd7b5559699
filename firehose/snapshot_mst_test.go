package firehose

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
)

// Hand-made MSTs that no correct PDS writes. Where the old reader (which
// trusted the tree) went wrong on them, the streaming reader refuses the
// repo instead: its pruning relies on key order, so it checks key order
// along every path it walks.

type craftedCAR struct{ secs []carSection }

func (c *craftedCAR) block(t *testing.T, data []byte) cid.Cid {
	t.Helper()
	id, err := genPrefix.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	c.secs = append(c.secs, carSection{c: id, data: data})
	return id
}

func (c *craftedCAR) record(t *testing.T, n int) cid.Cid {
	t.Helper()
	b, _, err := fakepds.EncodeRecord(snapValue("com.atproto.space.space", n))
	if err != nil {
		t.Fatal(err)
	}
	return c.block(t, b)
}

// node adds an MST node; entries' keys are given whole and compressed here
// unless an entry already sets KeySuffix.
func (c *craftedCAR) node(t *testing.T, left *cid.Cid, keys []string, entries ...mst.EntryData) cid.Cid {
	t.Helper()
	prev := ""
	for i, k := range keys {
		p := 0
		for p < len(prev) && p < len(k) && prev[p] == k[p] {
			p++
		}
		entries[i].PrefixLen, entries[i].KeySuffix = int64(p), []byte(k[p:])
		prev = k
	}
	nd := mst.NodeData{Left: left, Entries: entries}
	b, _, err := nd.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return c.block(t, b)
}

func (c *craftedCAR) car(t *testing.T, data cid.Cid) []byte {
	t.Helper()
	commit := repo.Commit{DID: fakepds.PLCDID("crafted"), Version: repo.ATPROTO_REPO_VERSION, Data: data,
		Rev: "3lbdnbfyxcs2a", Sig: []byte{1, 2, 3}}
	var buf bytes.Buffer
	if err := commit.MarshalCBOR(&buf); err != nil {
		t.Fatal(err)
	}
	root := c.block(t, buf.Bytes())
	var head bytes.Buffer
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{root}, Version: 1}, &head); err != nil {
		t.Fatal(err)
	}
	return joinCAR(head.Bytes(), c.secs)
}

func ptr(c cid.Cid) *cid.Cid { return &c }

func TestSnapshotRefusesBrokenMSTs(t *testing.T) {
	const sp = "com.atproto.space.space/"
	// Each case returns its CAR and what the old reader did with it: read
	// n records without complaint, or panic (n < 0).
	cases := map[string]func(t *testing.T) (car []byte, oldRead int){
		// Keys out of order in one node: the old reader read them as they
		// came.
		"keys out of order": func(t *testing.T) ([]byte, int) {
			var c craftedCAR
			r1, r2 := c.record(t, 1), c.record(t, 2)
			n := c.node(t, nil, []string{sp + "b", sp + "a"}, mst.EntryData{Value: r1}, mst.EntryData{Value: r2})
			return c.car(t, n), 2
		},
		// A child whose keys are outside the range its parent gives it.
		"child out of range": func(t *testing.T) ([]byte, int) {
			var c craftedCAR
			r1, r2 := c.record(t, 1), c.record(t, 2)
			child := c.node(t, nil, []string{sp + "z"}, mst.EntryData{Value: r2})
			n := c.node(t, ptr(child), []string{sp + "m"}, mst.EntryData{Value: r1})
			return c.car(t, n), 2
		},
		// A prefix longer than the previous key: the old reader panicked.
		"prefix beyond the previous key": func(t *testing.T) ([]byte, int) {
			var c craftedCAR
			r1 := c.record(t, 1)
			nd := mst.NodeData{Entries: []mst.EntryData{{PrefixLen: 5, KeySuffix: []byte("x"), Value: r1}}}
			b, _, err := nd.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			return c.car(t, c.block(t, b)), -1
		},
		// An MST node missing from the CAR: the old reader silently read
		// the tree without that subtree, and a resync would have deleted
		// the tuples of records that still exist.
		"missing subtree": func(t *testing.T) ([]byte, int) {
			var c craftedCAR
			r1, r2 := c.record(t, 1), c.record(t, 2)
			nd := mst.NodeData{Entries: []mst.EntryData{{KeySuffix: []byte(sp + "a"), Value: r2}}}
			_, missing, err := nd.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			n := c.node(t, missing, []string{sp + "m"}, mst.EntryData{Value: r1})
			return c.car(t, n), 1
		},
		"key too long": func(t *testing.T) ([]byte, int) {
			var c craftedCAR
			r1 := c.record(t, 1)
			n := c.node(t, nil, []string{sp + strings.Repeat("k", 1100)}, mst.EntryData{Value: r1})
			return c.car(t, n), 1
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			car, oldRead := mk(t)
			old, oerr := oldReadRepoCAR(t.Context(), car, nil)
			switch {
			case oldRead < 0 && (oerr == nil || !strings.Contains(oerr.Error(), "panicked")):
				t.Errorf("old reader: %v, want a panic", oerr)
			case oldRead >= 0 && (oerr != nil || len(old.Records) != oldRead):
				t.Errorf("old reader: %v, want %d records", oerr, oldRead)
			}
			for _, l := range snapLimits {
				if snap, err := readSnapshot(t.Context(), bytes.NewReader(car), bytes.NewReader(car), nil, l.lim); err == nil {
					t.Errorf("%s: read %v, want an error", l.name, sortedPaths(snap))
				} else if !strings.Contains(err.Error(), "MST") {
					t.Errorf("%s: %v, want an MST error", l.name, err)
				}
			}
		})
	}
}

// TestSnapshotPrunesByCollection: a subtree between two keys of one
// unkept collection is never read, so a missing one does not matter (as
// for the old reader, which skipped missing subtrees); a subtree that
// straddles collections is read.
func TestSnapshotPrunesByCollection(t *testing.T) {
	var c craftedCAR
	r1, r2, r3 := c.record(t, 1), c.record(t, 2), c.record(t, 3)
	absent := func(key string) *cid.Cid {
		nd := mst.NodeData{Entries: []mst.EntryData{{KeySuffix: []byte(key), Value: r3}}}
		_, id, err := nd.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	// Between two posts: never read when posts are not kept.
	n := c.node(t, nil, []string{"app.bsky.feed.post/a", "app.bsky.feed.post/c", "com.atproto.space.space/a"},
		mst.EntryData{Value: r1, Right: absent("app.bsky.feed.post/b")}, mst.EntryData{Value: r2}, mst.EntryData{Value: r3})
	data := c.car(t, n)
	for _, l := range snapLimits {
		snap, err := readSnapshot(t.Context(), bytes.NewReader(data), bytes.NewReader(data), genProjected, l.lim)
		if err != nil || len(snap.Records) != 1 || snap.Records[0].Path() != "com.atproto.space.space/a" {
			t.Errorf("%s: %v %v", l.name, snap, err)
		}
		if _, err := readSnapshot(t.Context(), bytes.NewReader(data), bytes.NewReader(data), nil, l.lim); err == nil {
			t.Errorf("%s: keep all reads past a missing subtree", l.name)
		}
	}
	// Between a post and a space: may hold anything, so it is read.
	var d craftedCAR
	r1, r2 = d.record(t, 1), d.record(t, 2)
	n = d.node(t, nil, []string{"app.bsky.feed.post/a", "com.atproto.space.space/a"},
		mst.EntryData{Value: r1, Right: absent("com.atproto.space.relation/x")}, mst.EntryData{Value: r2})
	data = d.car(t, n)
	_, err := readSnapshot(t.Context(), bytes.NewReader(data), bytes.NewReader(data), genProjected, defaultSnapshotLimits)
	if err == nil || !strings.Contains(err.Error(), "not in the CAR") {
		t.Errorf("straddling subtree: %v, want it read (and found missing)", err)
	}
}

// TestSnapshotBounds: what comes from the network is bounded.
func TestSnapshotBounds(t *testing.T) {
	small, err := fakepds.NewRepo(fakepds.PLCDID("bounds"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := small.Apply(snapWrite("com.atproto.space.space", "a", 1)); err != nil {
		t.Fatal(err)
	}
	good := exportCAR(t, small)
	head, secs := splitCAR(t, good)
	big := carSection{data: bytes.Repeat([]byte{0x60}, MaxCARBlockBytes)}
	big.c, _ = genPrefix.Sum(big.data)
	hugeHeader := append([]byte{0x81, 0x80, 0x04}, make([]byte, 16)...) // claims 64 KiB + 1
	cases := map[string][]byte{
		"block over the limit":        joinCAR(head, append(secs, big)),
		"header over the limit":       hugeHeader,
		"section length beyond input": append(bytes.Clone(head), 0xff, 0xff, 0x7f, 1, 2),
		"empty section":               append(bytes.Clone(head), 0x00),
	}
	for name, b := range cases {
		if _, err := ReadRepoCAR(t.Context(), b, nil); err == nil {
			t.Errorf("%s: read", name)
		}
	}
	// The node visit cap.
	lim := defaultSnapshotLimits
	lim.maxNodes = 0
	if _, err := readSnapshot(t.Context(), bytes.NewReader(good), bytes.NewReader(good), nil, lim); err == nil ||
		!strings.Contains(err.Error(), "nodes to visit") {
		t.Errorf("node cap: %v", err)
	}
	// A cancelled context stops the read.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := ReadRepoCAR(ctx, good, nil); !errors.Is(err, ctx.Err()) {
		t.Errorf("cancelled: %v", err)
	}
}
