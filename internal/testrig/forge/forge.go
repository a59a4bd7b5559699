package forge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/events"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
	"github.com/multiformats/go-multihash"
	cbg "github.com/whyrusleeping/cbor-gen"
)

// ErrNoTarget: the frame has no create or update op that Options.Match
// accepts.
var ErrNoTarget = errors.New("forge: no create or update op to alter")

// Options of Commit.
type Options struct {
	// Key (required) signs the forged commit: the attacker's key.
	Key atcrypto.PrivateKey
	// Match picks the op to alter: the first create or update whose path
	// it accepts (nil: the first create or update).
	Match func(path string) bool
	// Edit changes the record's value in place (nil: sets the field
	// "forged" to true).
	Edit func(record map[string]any)
}

// Result says what Commit changed.
type Result struct {
	// Frame is the forged #commit frame (header and body).
	Frame []byte
	// Path is the altered op's path; OldCID and NewCID its record's CIDs.
	Path           string
	OldCID, NewCID cid.Cid
	// Record is the forged record's value.
	Record map[string]any
}

var prefix = cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256)

// Commit returns frame (a #commit as a relay or PDS sends it) with one
// projected record's value changed and the commit re-signed by opt.Key.
func Commit(frame []byte, opt Options) (*Result, error) {
	if opt.Key == nil {
		return nil, errors.New("forge: Options.Key is required")
	}
	ctx := context.Background()
	msg, err := decode(frame)
	if err != nil {
		return nil, err
	}
	var target *comatproto.SyncSubscribeRepos_RepoOp
	for _, o := range msg.Ops {
		if o != nil && (o.Action == "create" || o.Action == "update") && o.Cid != nil && (opt.Match == nil || opt.Match(o.Path)) {
			target = o
			break
		}
	}
	if target == nil {
		return nil, ErrNoTarget
	}
	commit, r, err := repo.LoadRepoFromCAR(ctx, bytes.NewReader(msg.Blocks))
	if err != nil {
		return nil, fmt.Errorf("forge: read CAR: %w", err)
	}
	oldCID := cid.Cid(*target.Cid)
	blk, err := r.RecordStore.Get(ctx, oldCID)
	if err != nil {
		return nil, fmt.Errorf("forge: record %s of %q: %w", oldCID, target.Path, err)
	}
	rec, err := atdata.UnmarshalCBOR(blk.RawData())
	if err != nil {
		return nil, fmt.Errorf("forge: decode record of %q: %w", target.Path, err)
	}
	if opt.Edit != nil {
		opt.Edit(rec)
	} else {
		rec["forged"] = true
	}
	data, err := atdata.MarshalCBOR(rec)
	if err != nil {
		return nil, fmt.Errorf("forge: encode record: %w", err)
	}
	newCID, err := prefix.Sum(data)
	if err != nil {
		return nil, err
	}
	if newCID.Equals(oldCID) {
		return nil, errors.New("forge: Edit left the record unchanged")
	}
	// The same path gets the new value in the (partial) tree the CAR
	// carries: the nodes on its path are there, as sync 1.1 requires.
	if _, err := r.MST.Insert([]byte(target.Path), newCID); err != nil {
		return nil, fmt.Errorf("forge: insert %q: %w", target.Path, err)
	}
	bs := &memBlockstore{m: map[string]blocks.Block{}}
	root, err := r.MST.WriteDiffBlocks(ctx, bs)
	if err != nil {
		return nil, fmt.Errorf("forge: write tree: %w", err)
	}
	forged := repo.Commit{DID: commit.DID, Version: commit.Version, Prev: commit.Prev, Data: *root, Rev: commit.Rev}
	if err := forged.Sign(opt.Key); err != nil {
		return nil, fmt.Errorf("forge: sign: %w", err)
	}
	var cb bytes.Buffer
	if err := forged.MarshalCBOR(&cb); err != nil {
		return nil, fmt.Errorf("forge: encode commit: %w", err)
	}
	commitCID, err := prefix.Sum(cb.Bytes())
	if err != nil {
		return nil, err
	}
	// The new CAR: the forged commit, the rewritten tree nodes, the new
	// record, then every original block but the old commit (unused blocks
	// are harmless, and other ops may share the old record's CID).
	out := []blockData{{commitCID, cb.Bytes()}}
	for _, b := range bs.order {
		out = append(out, blockData{b.Cid(), b.RawData()})
	}
	out = append(out, blockData{newCID, data})
	orig, err := car.NewCarReader(bytes.NewReader(msg.Blocks))
	if err != nil {
		return nil, fmt.Errorf("forge: read CAR: %w", err)
	}
	oldCommit := cid.Cid(msg.Commit)
	for {
		b, err := orig.Next()
		if err != nil {
			break // io.EOF: LoadRepoFromCAR read the same CAR whole
		}
		if !b.Cid().Equals(oldCommit) {
			out = append(out, blockData{b.Cid(), b.RawData()})
		}
	}
	carBytes, err := writeCAR(commitCID, out)
	if err != nil {
		return nil, err
	}
	msg.Blocks = lexutil.LexBytes(carBytes)
	msg.Commit = lexutil.LexLink(commitCID)
	nc := lexutil.LexLink(newCID)
	target.Cid = &nc
	f, err := encode(msg)
	if err != nil {
		return nil, err
	}
	return &Result{Frame: f, Path: target.Path, OldCID: oldCID, NewCID: newCID, Record: rec}, nil
}

func decode(frame []byte) (*comatproto.SyncSubscribeRepos_Commit, error) {
	r := bytes.NewReader(frame)
	var h events.EventHeader
	if err := h.UnmarshalCBOR(r); err != nil {
		return nil, fmt.Errorf("forge: frame header: %w", err)
	}
	if h.Op != events.EvtKindMessage || h.MsgType != "#commit" {
		return nil, fmt.Errorf("forge: not a #commit frame (%d %q)", h.Op, h.MsgType)
	}
	var msg comatproto.SyncSubscribeRepos_Commit
	if err := msg.UnmarshalCBOR(cbg.NewCborReader(r)); err != nil {
		return nil, fmt.Errorf("forge: #commit: %w", err)
	}
	return &msg, nil
}

func encode(msg *comatproto.SyncSubscribeRepos_Commit) ([]byte, error) {
	var buf bytes.Buffer
	h := events.EventHeader{Op: events.EvtKindMessage, MsgType: "#commit"}
	if err := h.MarshalCBOR(&buf); err != nil {
		return nil, fmt.Errorf("forge: encode header: %w", err)
	}
	if err := msg.MarshalCBOR(&buf); err != nil {
		return nil, fmt.Errorf("forge: encode #commit: %w", err)
	}
	return buf.Bytes(), nil
}

type blockData struct {
	c    cid.Cid
	data []byte
}

func writeCAR(root cid.Cid, blks []blockData) ([]byte, error) {
	var buf bytes.Buffer
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{root}, Version: 1}, &buf); err != nil {
		return nil, fmt.Errorf("forge: CAR header: %w", err)
	}
	seen := map[string]bool{}
	for _, b := range blks {
		if k := b.c.KeyString(); !seen[k] {
			seen[k] = true
			if err := carutil.LdWrite(&buf, b.c.Bytes(), b.data); err != nil {
				return nil, fmt.Errorf("forge: CAR block: %w", err)
			}
		}
	}
	return buf.Bytes(), nil
}

// memBlockstore collects the tree nodes WriteDiffBlocks writes, in order.
type memBlockstore struct {
	mu    sync.Mutex
	m     map[string]blocks.Block
	order []blocks.Block
}

func (b *memBlockstore) DeleteBlock(_ context.Context, c cid.Cid) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, c.KeyString())
	return nil
}

func (b *memBlockstore) Has(_ context.Context, c cid.Cid) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.m[c.KeyString()]
	return ok, nil
}

func (b *memBlockstore) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if blk, ok := b.m[c.KeyString()]; ok {
		return blk, nil
	}
	return nil, &ipld.ErrNotFound{Cid: c}
}

func (b *memBlockstore) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	blk, err := b.Get(ctx, c)
	if err != nil {
		return 0, err
	}
	return len(blk.RawData()), nil
}

func (b *memBlockstore) Put(_ context.Context, blk blocks.Block) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.m[blk.Cid().KeyString()]; !ok {
		b.order = append(b.order, blk)
	}
	b.m[blk.Cid().KeyString()] = blk
	return nil
}

func (b *memBlockstore) PutMany(ctx context.Context, blks []blocks.Block) error {
	for _, blk := range blks {
		if err := b.Put(ctx, blk); err != nil {
			return err
		}
	}
	return nil
}

func (b *memBlockstore) AllKeysChan(context.Context) (<-chan cid.Cid, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan cid.Cid, len(b.order))
	for _, blk := range b.order {
		ch <- blk.Cid()
	}
	close(ch)
	return ch, nil
}

func (b *memBlockstore) HashOnRead(bool) {}
