package firehose

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	"github.com/multiformats/go-multihash"
)

// A generator of big repo CARs, for the benchmark and the allocation test:
// a real MST (indigo's mst package), a signed commit, and record blocks,
// written straight to a file without holding the records in memory. Blocks
// come in a scrambled order: records with MST nodes interleaved at random
// and the commit last, so the reader can't rely on a top-down layout.

var genPrefix = cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256)

// genSpec says what genRepoCAR writes.
type genSpec struct {
	did       string
	bytes     int64 // about this many bytes of post records
	padding   int   // bytes of text per post
	projected int   // records in projected collections
}

// genRecord is the i-th record of the repo: its path and block.
func (s genSpec) record(i, posts int) (string, []byte) {
	tid := syntax.NewTID(1_700_000_000_000_000+int64(i)*1000, uint(i%1024)).String()
	var v map[string]any
	var path string
	if i < posts {
		text := fmt.Sprintf("post %d ", i) + strings.Repeat("lorem ipsum ", s.padding/12)
		v = map[string]any{"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-01-01T00:00:00Z"}
		path = "app.bsky.feed.post/" + tid
	} else if j := i - posts; j%2 == 0 {
		v = map[string]any{"$type": "com.atproto.space.space", "displayName": fmt.Sprintf("space %d", j), "bubble": j%4 == 0}
		path = "com.atproto.space.space/" + tid
	} else {
		v = map[string]any{"$type": "com.atproto.space.relation", "resource": fmt.Sprintf("space-%d", j),
			"permission": "member", "subject": "did:plc:abcdefghijklmnopqrstuvwx"}
		path = "com.atproto.space.relation/" + tid
	}
	b, err := atdata.MarshalCBOR(v)
	if err != nil {
		panic(err)
	}
	return path, b
}

// genRepoCAR writes the repo described by s to path and returns the
// number of records and of MST nodes.
func genRepoCAR(tb testing.TB, path string, s genSpec) (records, nodes int) {
	tb.Helper()
	_, one := s.record(0, 1)
	posts := int(s.bytes / int64(len(one)+40))
	total := posts + s.projected
	// Pass 1: the MST from every record's CID.
	tree := mst.NewEmptyTree()
	for i := range total {
		p, b := s.record(i, posts)
		c, err := genPrefix.Sum(b)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := tree.Insert([]byte(p), c); err != nil {
			tb.Fatal(err)
		}
	}
	bs := &listBlockstore{}
	root, err := tree.WriteDiffBlocks(context.Background(), bs)
	if err != nil {
		tb.Fatal(err)
	}
	tree = mst.Tree{}
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		tb.Fatal(err)
	}
	commit := &repo.Commit{DID: s.did, Version: repo.ATPROTO_REPO_VERSION, Data: *root,
		Rev: syntax.NewTIDFromTime(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), 0).String()}
	if err := commit.Sign(key); err != nil {
		tb.Fatal(err)
	}
	var cbuf bytes.Buffer
	if err := commit.MarshalCBOR(&cbuf); err != nil {
		tb.Fatal(err)
	}
	commitCID, err := genPrefix.Sum(cbuf.Bytes())
	if err != nil {
		tb.Fatal(err)
	}
	// Pass 2: write the CAR, records again, nodes shuffled among them.
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{commitCID}, Version: 1}, w); err != nil {
		tb.Fatal(err)
	}
	section := func(c cid.Cid, data []byte) {
		var v [binary.MaxVarintLen64]byte
		n := binary.PutUvarint(v[:], uint64(len(c.Bytes())+len(data)))
		_, _ = w.Write(v[:n])
		_, _ = w.Write(c.Bytes())
		_, _ = w.Write(data)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	nodeBlocks := bs.blocks
	bs.blocks = nil
	rng.Shuffle(len(nodeBlocks), func(i, j int) { nodeBlocks[i], nodeBlocks[j] = nodeBlocks[j], nodeBlocks[i] })
	next := 0
	for i := range total {
		_, b := s.record(i, posts)
		c, _ := genPrefix.Sum(b)
		section(c, b)
		for next < len(nodeBlocks) && rng.IntN(total) < len(nodeBlocks) {
			section(nodeBlocks[next].Cid(), nodeBlocks[next].RawData())
			next++
		}
	}
	for ; next < len(nodeBlocks); next++ {
		section(nodeBlocks[next].Cid(), nodeBlocks[next].RawData())
	}
	section(commitCID, cbuf.Bytes())
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	return total, len(nodeBlocks)
}

// listBlockstore collects the blocks indigo's MST writes.
type listBlockstore struct{ blocks []blocks.Block }

func (b *listBlockstore) DeleteBlock(context.Context, cid.Cid) error { return nil }
func (b *listBlockstore) Has(context.Context, cid.Cid) (bool, error) { return false, nil }
func (b *listBlockstore) Get(context.Context, cid.Cid) (blocks.Block, error) {
	return nil, os.ErrNotExist
}
func (b *listBlockstore) GetSize(context.Context, cid.Cid) (int, error) { return 0, os.ErrNotExist }
func (b *listBlockstore) Put(_ context.Context, blk blocks.Block) error {
	b.blocks = append(b.blocks, blk)
	return nil
}
func (b *listBlockstore) AllKeysChan(context.Context) (<-chan cid.Cid, error) { return nil, nil }
func (b *listBlockstore) HashOnRead(bool)                                     {}
func (b *listBlockstore) PutMany(_ context.Context, blks []blocks.Block) error {
	b.blocks = append(b.blocks, blks...)
	return nil
}

// genProjected reports whether a generated record's collection is
// projected.
func genProjected(coll string) bool {
	return coll == "com.atproto.space.space" || coll == "com.atproto.space.relation" || coll == "com.atproto.space.group"
}

// sortedPaths lists a snapshot's paths (for messages).
func sortedPaths(s *Snapshot) []string {
	var out []string
	for _, r := range s.Records {
		out = append(out, r.Path())
	}
	sort.Strings(out)
	return out
}
