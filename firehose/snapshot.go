package firehose

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/ipfs/go-cid"
)

// Reading a repo snapshot (a getRepo CAR) with memory bounded independently
// of the repo's size:
//
//  1. indexCAR streams the CAR once: framing, hashing every block, keeping
//     the commit block and a compact index of block locations.
//  2. The MST is walked from the commit's data root, visiting only subtrees
//     whose key range can hold a kept collection. MST keys are
//     `collection/rkey`, sorted, so a subtree between two keys of the same
//     collection holds only that collection's keys: if keep refuses that
//     collection, the subtree is skipped unread. Nodes are read back from
//     the spool by location, or, for those the index could not hold, found
//     together in one scan per level of the walk.
//  3. The record blocks of kept paths are read back the same way (at most
//     one scan), checked against their CIDs and decoded.
//
// Blocks may come in any order (the reference PDS orders them by rev and
// CID): nothing assumes the tree arrives top-down.

// MaxMSTNodes bounds the MST nodes one snapshot read visits (it bounds
// time; nothing is kept per node visited but the records it names).
const MaxMSTNodes = 1_000_000

const (
	// walkBudgetBytes bounds the walk's to-do list (subtrees yet to read,
	// with the keys around them). A real MST needs a few KiB: depth times
	// fan-out.
	walkBudgetBytes = 4 << 20
	// maxPendingNodes is how many unindexed nodes wait for one scan.
	maxPendingNodes = 1 << 14
)

// snapshotLimits are a snapshot read's budgets; tests shrink them to reach
// the scan paths with small repos.
type snapshotLimits struct {
	indexBytes int
	maxNodes   int
	maxPending int
	// maxRecords bounds the records kept (those keep passes): each is
	// decoded and held, so they are what a snapshot's memory grows with.
	maxRecords int
}

var defaultSnapshotLimits = snapshotLimits{indexBytes: defaultIndexBytes, maxNodes: MaxMSTNodes, maxPending: maxPendingNodes,
	maxRecords: DefaultMaxRepoRecords}

// ReadRepoCAR reads a full repo export held in memory and returns its
// records whose collection passes keep (nil keeps all), sorted by path. It
// reads what GetRepo reads, the same way, over car itself.
func ReadRepoCAR(ctx context.Context, car []byte, keep func(string) bool) (*Snapshot, error) {
	return readSnapshot(ctx, bytes.NewReader(car), bytes.NewReader(car), keep, defaultSnapshotLimits)
}

// snapshotStats says what a snapshot read did (for tests).
type snapshotStats struct {
	blocks        int  // blocks in the CAR
	indexComplete bool // the index held every block
	visited       int  // MST nodes read
	nodeScans     int  // scans to find MST nodes the index lacked
	recordScans   int  // scans to find record blocks the index lacked
	// commit is the snapshot's signed commit (for signature checks).
	commit *repo.Commit
}

// readSnapshot reads a CAR from r in one pass; spool must then hold the
// same bytes (r may be a TeeReader writing them to it).
func readSnapshot(ctx context.Context, r io.Reader, spool io.ReaderAt, keep func(string) bool, lim snapshotLimits) (*Snapshot, error) {
	snap, _, err := readSnapshotStats(ctx, r, spool, keep, lim)
	return snap, err
}

func readSnapshotStats(ctx context.Context, r io.Reader, spool io.ReaderAt, keep func(string) bool, lim snapshotLimits) (*Snapshot, *snapshotStats, error) {
	st := &snapshotStats{}
	snap, err := readSnapshotInto(ctx, r, spool, keep, lim, st)
	return snap, st, err
}

func readSnapshotInto(ctx context.Context, r io.Reader, spool io.ReaderAt, keep func(string) bool, lim snapshotLimits, st *snapshotStats) (*Snapshot, error) {
	cf, err := indexCAR(ctx, r, lim.indexBytes)
	if err != nil {
		return nil, fmt.Errorf("read CAR: %w", err)
	}
	st.blocks, st.indexComplete = cf.blocks, cf.index.complete
	if cf.commit == nil {
		return nil, fmt.Errorf("read CAR: commit block %s is not in the CAR", cf.root)
	}
	var commit repo.Commit
	if err := commit.UnmarshalCBOR(bytes.NewReader(cf.commit)); err != nil {
		return nil, fmt.Errorf("read CAR: parse commit block: %w", err)
	}
	if err := commit.VerifyStructure(); err != nil {
		return nil, fmt.Errorf("read CAR: parse commit block: %w", err)
	}
	st.commit = &commit
	w := &mstWalk{spool: spool, cf: cf, keep: keep, lim: lim}
	err = w.run(ctx, commit.Data)
	st.visited, st.nodeScans = w.visited, w.scans
	if err != nil {
		return nil, fmt.Errorf("walk MST: %w", err)
	}
	recs := w.recs
	if st.recordScans, err = readRecords(ctx, spool, cf, recs); err != nil {
		return nil, fmt.Errorf("read records: %w", err)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Path() < recs[j].Path() })
	return &Snapshot{DID: commit.DID, Rev: commit.Rev, Commit: commit.Data, Records: recs}, nil
}

// nodeRef is a subtree still to read: its root node and the keys around it
// (every key in it is strictly between lo and hi).
type nodeRef struct {
	c            cid.Cid
	lo, hi       string
	hasLo, hasHi bool
	loc          uint64 // where a scan found it; 0 until then
}

// cost is what a waiting ref holds, counted against walkBudgetBytes (keys
// shared between neighbours are counted twice: an upper bound).
func (r *nodeRef) cost() int { return 96 + len(r.c.KeyString()) + len(r.lo) + len(r.hi) }

type mstWalk struct {
	spool   io.ReaderAt
	cf      *carFile
	keep    func(string) bool
	lim     snapshotLimits
	buf     []byte
	recs    []Record
	visited int
	held    int
	scans   int
}

// run walks the tree depth first. A node the index can't place waits in
// pending; one scan resolves all pending nodes when the stack runs dry
// (or pending is full), so scans number about the depth of the tree.
func (w *mstWalk) run(ctx context.Context, root cid.Cid) error {
	stack := []nodeRef{{c: root}}
	w.held = stack[0].cost()
	var pending []nodeRef
	for len(stack) > 0 || len(pending) > 0 {
		if len(pending) > 0 && (len(stack) == 0 || len(pending) >= w.lim.maxPending) {
			if err := w.resolve(ctx, pending); err != nil {
				return err
			}
			stack = append(stack, pending...)
			pending = pending[:0]
			continue
		}
		ref := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		data, found, err := w.node(&ref)
		if err != nil {
			return err
		}
		if !found {
			if ref.loc != 0 || w.cf.index.complete {
				return fmt.Errorf("MST node %s is not in the CAR", ref.c)
			}
			pending = append(pending, ref)
			continue
		}
		w.held -= ref.cost()
		if w.visited++; w.visited > w.lim.maxNodes {
			return fmt.Errorf("MST has more than %d nodes to visit", w.lim.maxNodes)
		}
		if w.visited%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		n0 := len(stack)
		if stack, err = w.visit(&ref, data, stack); err != nil {
			return err
		}
		// Children were appended left to right; take the leftmost first.
		for i, j := n0, len(stack)-1; i < j; i, j = i+1, j-1 {
			stack[i], stack[j] = stack[j], stack[i]
		}
		if w.held > walkBudgetBytes {
			return fmt.Errorf("MST walk needs more than %d bytes of pending subtrees", walkBudgetBytes)
		}
	}
	return nil
}

// node reads ref's block from where a scan found it or from the index, and
// checks it against the CID.
func (w *mstWalk) node(ref *nodeRef) ([]byte, bool, error) {
	var data []byte
	found := false
	if ref.loc != 0 {
		d, ok, err := readLoc(w.spool, ref.loc, ref.c, &w.buf)
		if err != nil {
			return nil, false, err
		}
		data, found = d, ok
	} else {
		_, err := w.cf.index.candidates(ref.c, func(loc uint64) (bool, error) {
			d, ok, err := readLoc(w.spool, loc, ref.c, &w.buf)
			data, found = d, ok
			return ok, err
		})
		if err != nil {
			return nil, false, err
		}
	}
	if !found {
		return nil, false, nil
	}
	if sum, err := ref.c.Prefix().Sum(data); err != nil || !sum.Equals(ref.c) {
		return nil, false, fmt.Errorf("MST node %s does not hash to its CID", ref.c)
	}
	return data, true, nil
}

// visit decodes one node, checks that its keys are in order and within the
// subtree's bounds, keeps the records of kept collections and appends the
// subtrees that may hold some to stack.
func (w *mstWalk) visit(ref *nodeRef, data []byte, stack []nodeRef) ([]nodeRef, error) {
	var nd mst.NodeData
	if err := nd.UnmarshalCBOR(bytes.NewReader(data)); err != nil {
		return stack, fmt.Errorf("MST node %s: %w", ref.c, err)
	}
	keys := make([]string, len(nd.Entries))
	prev := ""
	for i, e := range nd.Entries {
		if e.PrefixLen < 0 || e.PrefixLen > int64(len(prev)) {
			return stack, fmt.Errorf("MST node %s: entry %d: prefix length %d", ref.c, i, e.PrefixLen)
		}
		if int(e.PrefixLen)+len(e.KeySuffix) > mst.MAX_KEY_BYTES {
			return stack, fmt.Errorf("MST node %s: entry %d: key longer than %d bytes", ref.c, i, mst.MAX_KEY_BYTES)
		}
		k := prev[:e.PrefixLen] + string(e.KeySuffix)
		if (i > 0 && k <= prev) || (i == 0 && ref.hasLo && k <= ref.lo) {
			return stack, fmt.Errorf("MST node %s: keys out of order", ref.c)
		}
		keys[i], prev = k, k
	}
	if n := len(keys); n > 0 && ref.hasHi && keys[n-1] >= ref.hi {
		return stack, fmt.Errorf("MST node %s: keys out of order", ref.c)
	}
	for i, e := range nd.Entries {
		if coll, rkey, ok := strings.Cut(keys[i], "/"); ok && (w.keep == nil || w.keep(coll)) {
			if len(w.recs) >= w.lim.maxRecords {
				return stack, fmt.Errorf("%w: more than %d records of the collections read", ErrRepoTooLarge, w.lim.maxRecords)
			}
			w.recs = append(w.recs, Record{Collection: coll, RKey: rkey, CID: e.Value})
		}
	}
	push := func(c *cid.Cid, lo string, hasLo bool, hi string, hasHi bool) {
		if c == nil || w.skip(lo, hasLo, hi, hasHi) {
			return
		}
		r := nodeRef{c: *c, lo: lo, hi: hi, hasLo: hasLo, hasHi: hasHi}
		w.held += r.cost()
		stack = append(stack, r)
	}
	if len(keys) == 0 {
		push(nd.Left, ref.lo, ref.hasLo, ref.hi, ref.hasHi)
		return stack, nil
	}
	push(nd.Left, ref.lo, ref.hasLo, keys[0], true)
	for i, e := range nd.Entries {
		hi, hasHi := ref.hi, ref.hasHi
		if i+1 < len(keys) {
			hi, hasHi = keys[i+1], true
		}
		push(e.Right, keys[i], true, hi, hasHi)
	}
	return stack, nil
}

// skip reports whether a subtree strictly between lo and hi can't hold a
// kept record: both bounds are keys `C/…` of one collection C (so is every
// key between them: they all start with "C/") and keep refuses C.
func (w *mstWalk) skip(lo string, hasLo bool, hi string, hasHi bool) bool {
	if w.keep == nil || !hasLo || !hasHi {
		return false
	}
	lc, _, lok := strings.Cut(lo, "/")
	hc, _, hok := strings.Cut(hi, "/")
	return lok && hok && lc == hc && !w.keep(lc)
}

// resolve finds the pending nodes in one scan of the spool.
func (w *mstWalk) resolve(ctx context.Context, pending []nodeRef) error {
	want := make(map[string]uint64, len(pending))
	for i := range pending {
		want[pending[i].c.KeyString()] = 0
	}
	w.scans++
	if err := scanCAR(ctx, w.spool, w.cf, want); err != nil {
		return err
	}
	for i := range pending {
		loc := want[pending[i].c.KeyString()]
		if loc == 0 {
			return fmt.Errorf("MST node %s is not in the CAR", pending[i].c)
		}
		pending[i].loc = loc
	}
	return nil
}

// readRecords reads, checks and decodes the block of each record: from the
// index, or, for those it could not hold, in one scan.
func readRecords(ctx context.Context, spool io.ReaderAt, cf *carFile, recs []Record) (scans int, err error) {
	var buf []byte
	var later []int
	for i := range recs {
		rec := &recs[i]
		var data []byte
		found := false
		if rec.CID.Defined() {
			_, err := cf.index.candidates(rec.CID, func(loc uint64) (bool, error) {
				d, ok, err := readLoc(spool, loc, rec.CID, &buf)
				data, found = d, ok
				return ok, err
			})
			if err != nil {
				return 0, err
			}
		}
		switch {
		case found:
			setRecord(rec, data)
		case cf.index.complete || !rec.CID.Defined():
			setMissing(rec)
		default:
			later = append(later, i)
		}
	}
	if len(later) == 0 {
		return 0, nil
	}
	want := make(map[string]uint64, len(later))
	for _, i := range later {
		want[recs[i].CID.KeyString()] = 0
	}
	if err := scanCAR(ctx, spool, cf, want); err != nil {
		return 1, err
	}
	for _, i := range later {
		rec := &recs[i]
		loc := want[rec.CID.KeyString()]
		if loc == 0 {
			setMissing(rec)
			continue
		}
		data, ok, err := readLoc(spool, loc, rec.CID, &buf)
		if err != nil {
			return 1, err
		}
		if !ok {
			return 1, fmt.Errorf("spooled CAR changed under the reader at %s", rec.CID)
		}
		setRecord(rec, data)
	}
	return 1, nil
}

func setMissing(rec *Record) {
	rec.Err = &OpError{Reason: ReasonMissingBlock, Detail: "record block " + rec.CID.String() + " is not in the CAR"}
}

// setRecord checks a record block against its CID and decodes it. data is
// a reused buffer: the decoder gets its own copy.
func setRecord(rec *Record, data []byte) {
	if sum, err := rec.CID.Prefix().Sum(data); err != nil || !sum.Equals(rec.CID) {
		rec.Err = &OpError{Reason: ReasonCIDMismatch, Detail: "block does not hash to " + rec.CID.String()}
		return
	}
	rec.Value, rec.Err = DecodeRecord(bytes.Clone(data))
}
