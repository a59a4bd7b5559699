package fakepds

import (
	"context"
	"sync"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// memBlockstore is the in-memory blockstore indigo's MST writes into; it
// remembers insertion order so a commit's diff blocks can be listed.
type memBlockstore struct {
	mu    sync.Mutex
	m     map[string]blocks.Block
	order []string
}

func newMemBlockstore() *memBlockstore { return &memBlockstore{m: map[string]blocks.Block{}} }

func (b *memBlockstore) list() []blocks.Block {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]blocks.Block, 0, len(b.order))
	for _, k := range b.order {
		out = append(out, b.m[k])
	}
	return out
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
	blk, ok := b.m[c.KeyString()]
	if !ok {
		return nil, &ipld.ErrNotFound{Cid: c}
	}
	return blk, nil
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
	k := blk.Cid().KeyString()
	if _, ok := b.m[k]; !ok {
		b.order = append(b.order, k)
	}
	b.m[k] = blk
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
	ch := make(chan cid.Cid, len(b.m))
	for _, blk := range b.m {
		ch <- blk.Cid()
	}
	close(ch)
	return ch, nil
}

func (b *memBlockstore) HashOnRead(bool) {}
