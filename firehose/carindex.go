package firehose

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"sort"

	"github.com/ipfs/go-cid"
)

// The first pass over a repo CAR and the reads after it. The CAR is read
// once as a stream (and spooled, by the caller, to a place it can be read
// again: a temp file, or the caller's own bytes); every section is framed
// with bounded sizes and every block is hashed against its CID, as go-car
// does for indigo's reader. What stays in memory is a compact index of
// where blocks are (16 bytes a block, up to a fixed budget), not the
// blocks. Later reads go back to the spool: one ReadAt per indexed block,
// or one sequential scan that resolves many CIDs at once when the index
// could not hold everything.

// Limits on what a CAR may make the reader hold.
const (
	// MaxCARHeaderBytes bounds a CAR header. A repo export's header names
	// one root and is about 60 bytes.
	MaxCARHeaderBytes = 64 << 10
	// MaxCARBlockBytes bounds one CAR section (CID and block). An atproto
	// record is at most 1 MiB; MST nodes and commits are far smaller.
	MaxCARBlockBytes = 2 << 20
)

const (
	// defaultIndexBytes is the block index's budget: 1 Mi blocks.
	defaultIndexBytes = 16 << 20
	idxEntryBytes     = 16
	idxChunkLen       = 1 << 16
	// A block's location packs its section's offset (39 bits: 512 GiB),
	// its length (24 bits) and whether it looks like an MST node (1 bit).
	locLenBits = 24
	maxSpool   = 1 << 39
	// scanBufBytes is the read buffer of the first pass and of scans.
	scanBufBytes = 256 << 10
)

// errCARFraming is a CAR that can't be split into sections.
var errCARFraming = errors.New("malformed CAR framing")

type idxEntry struct {
	hash uint64 // maphash of the CID's bytes
	loc  uint64
}

func packLoc(off int64, n int, node bool) uint64 {
	l := uint64(off)<<(locLenBits+1) | uint64(n)<<1
	if node {
		l |= 1
	}
	return l
}

// locOff and locLen unpack a location: the offset of the section's CID in
// the spool and the section's length (CID and block).
func locOff(l uint64) int64 { return int64(l >> (locLenBits + 1)) }
func locLen(l uint64) int   { return int(l>>1) & (1<<locLenBits - 1) }
func locNode(l uint64) bool { return l&1 == 1 }

// blockIndex maps CIDs to locations in the spool, within a fixed budget. It
// is filled in CAR order and sorted once. When it is full, blocks that
// don't look like MST nodes are dropped first (the walk needs nodes one at
// a time, records can be found in one scan); complete then turns false and
// a miss means "scan", not "absent".
type blockIndex struct {
	seed     maphash.Seed
	chunks   [][]idxEntry
	n, max   int
	complete bool
}

func newBlockIndex(budget int) *blockIndex {
	return &blockIndex{seed: maphash.MakeSeed(), max: max(budget/idxEntryBytes, 0), complete: true}
}

func (x *blockIndex) at(i int) *idxEntry { return &x.chunks[i/idxChunkLen][i%idxChunkLen] }

func (x *blockIndex) add(key []byte, loc uint64) {
	if x.n >= x.max {
		x.complete = false
		if !locNode(loc) || !x.dropNonNodes() {
			return
		}
	}
	if x.n%idxChunkLen == 0 && x.n/idxChunkLen == len(x.chunks) {
		// Chunks start small and grow by append: a small repo costs little.
		x.chunks = append(x.chunks, make([]idxEntry, 0, min(1024, x.max-x.n)))
	}
	c := &x.chunks[x.n/idxChunkLen]
	*c = append(*c, idxEntry{hash: maphash.Bytes(x.seed, key), loc: loc})
	x.n++
}

// dropNonNodes compacts the index to its MST-node entries and reports
// whether that made room.
func (x *blockIndex) dropNonNodes() bool {
	j := 0
	for i := range x.n {
		if e := *x.at(i); locNode(e.loc) {
			*x.at(j) = e
			j++
		}
	}
	for k := range x.chunks {
		start := k * idxChunkLen
		switch {
		case start >= j:
			x.chunks[k] = nil
		case start+idxChunkLen > j:
			x.chunks[k] = x.chunks[k][:j-start]
		}
	}
	x.chunks = x.chunks[:(j+idxChunkLen-1)/idxChunkLen]
	x.n = j
	return j < x.max
}

func (x *blockIndex) Len() int           { return x.n }
func (x *blockIndex) Less(i, j int) bool { return x.at(i).hash < x.at(j).hash }
func (x *blockIndex) Swap(i, j int)      { a, b := x.at(i), x.at(j); *a, *b = *b, *a }

// candidates calls fn with the location of every indexed block whose hash
// matches c's, until fn returns true. The index must be sorted.
func (x *blockIndex) candidates(c cid.Cid, fn func(loc uint64) (bool, error)) (bool, error) {
	h := maphash.String(x.seed, c.KeyString())
	for i := sort.Search(x.n, func(i int) bool { return x.at(i).hash >= h }); i < x.n && x.at(i).hash == h; i++ {
		if done, err := fn(x.at(i).loc); done || err != nil {
			return done, err
		}
	}
	return false, nil
}

// carFile is the result of the first pass.
type carFile struct {
	root   cid.Cid // the header's first root: the commit
	commit []byte  // the commit block, nil if the CAR lacks it
	start  int64   // offset of the first section
	size   int64
	blocks int
	index  *blockIndex
}

// indexCAR reads a CARv1 from r to its end: header, then sections, each
// hashed against its CID. r is read through a 256 KiB buffer; nothing else
// grows with the CAR but the index, which stays within indexBytes.
func indexCAR(ctx context.Context, r io.Reader, indexBytes int) (*carFile, error) {
	size := scanBufBytes
	if l, ok := r.(interface{ Len() int }); ok { // a CAR in memory: no bigger buffer than it
		size = min(size, l.Len())
	}
	br := bufio.NewReaderSize(r, size)
	hlen, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, fmt.Errorf("CAR header length: %w", noEOF(err))
	}
	if hlen == 0 || hlen > MaxCARHeaderBytes {
		return nil, fmt.Errorf("CAR header of %d bytes (the limit is %d)", hlen, MaxCARHeaderBytes)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return nil, fmt.Errorf("CAR header: %w", noEOF(err))
	}
	root, err := carRoot(hdr)
	if err != nil {
		return nil, fmt.Errorf("CAR header: %w", err)
	}
	cf := &carFile{root: root, index: newBlockIndex(indexBytes)}
	cf.start = int64(uvarintLen(hlen)) + int64(hlen)
	pos := cf.start
	var buf []byte
	for n := 0; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if _, err := br.Peek(1); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
		sec, vlen, err := readSection(br, &buf)
		if err != nil {
			return nil, fmt.Errorf("CAR section at byte %d: %w", pos, err)
		}
		// As go-car (indigo's reader) does: a block that does not hash to
		// its CID spoils the whole CAR.
		cl, err := checkBlock(sec)
		if err != nil {
			return nil, fmt.Errorf("CAR section at byte %d: %w", pos, err)
		}
		key, data := sec[:cl], sec[cl:]
		off := pos + int64(vlen)
		if off+int64(len(sec)) > maxSpool {
			return nil, fmt.Errorf("CAR larger than %d bytes", int64(maxSpool))
		}
		cf.index.add(key, packLoc(off, len(sec), looksLikeMSTNode(data)))
		if cf.commit == nil && string(key) == root.KeyString() {
			cf.commit = bytes.Clone(data)
		}
		pos = off + int64(len(sec))
		cf.blocks++
	}
	cf.size = pos
	sort.Sort(cf.index)
	return cf, nil
}

// checkBlock parses the CID at the start of a section and checks the block
// after it against it; it returns the CID's length. SHA-256 CIDs, all an
// atproto repo holds, are checked without allocating; others go through
// go-cid, which decides what is a valid CID either way.
func checkBlock(sec []byte) (int, error) {
	if cl, digest, ok := sha256CID(sec); ok {
		if sha256.Sum256(sec[cl:]) != [sha256.Size]byte(digest) {
			return 0, fmt.Errorf("block %s does not hash to its CID", cidString(sec[:cl]))
		}
		return cl, nil
	}
	cl, c, err := cid.CidFromBytes(sec)
	if err != nil {
		return 0, fmt.Errorf("CID: %w", err)
	}
	if sum, err := c.Prefix().Sum(sec[cl:]); err != nil || !sum.Equals(c) {
		return 0, fmt.Errorf("block %s does not hash to its CID", c)
	}
	return cl, nil
}

func cidString(b []byte) string {
	c, err := cid.Cast(b)
	if err != nil {
		return "?"
	}
	return c.String()
}

// sha256CID reads a CID with a 32-byte SHA-256 multihash at the start of b
// (v0, or v1 with minimal varints, as go-cid requires) and returns its
// length and digest. ok is false for anything else, left to go-cid.
func sha256CID(b []byte) (n int, digest []byte, ok bool) {
	const sha2 = 0x12
	if len(b) > 2 && b[0] == sha2 && b[1] == sha256.Size { // v0, as go-cid tells it
		if len(b) < 2+sha256.Size {
			return 0, nil, false
		}
		return 2 + sha256.Size, b[2 : 2+sha256.Size], true
	}
	var v [4]uint64 // version, codec, multihash code, digest length
	for i := range v {
		x, k := binary.Uvarint(b[n:])
		if k <= 0 || k > 9 || k != uvarintLen(x) {
			return 0, nil, false
		}
		v[i], n = x, n+k
	}
	if v[0] != 1 || v[2] != sha2 || v[3] != sha256.Size || len(b) < n+sha256.Size {
		return 0, nil, false
	}
	return n + sha256.Size, b[n : n+sha256.Size], true
}

// cidLen is the length of the CID at the start of a section already
// checked by checkBlock.
func cidLen(sec []byte) (int, error) {
	if n, _, ok := sha256CID(sec); ok {
		return n, nil
	}
	n, _, err := cid.CidFromBytes(sec)
	return n, err
}

// looksLikeMSTNode tells a DAG-CBOR MST node ({"e": [...], "l": ...} in
// canonical key order) from other blocks by its first bytes. A node encoded
// otherwise is still found, by a scan.
func looksLikeMSTNode(b []byte) bool {
	return len(b) >= 3 && b[0] == 0xa2 && b[1] == 0x61 && b[2] == 'e'
}

// readSection reads one length-prefixed section into *buf (grown up to
// MaxCARBlockBytes) and returns it with the length of its varint.
func readSection(br *bufio.Reader, buf *[]byte) ([]byte, int, error) {
	l, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, 0, noEOF(err)
	}
	if l == 0 {
		return nil, 0, fmt.Errorf("%w: empty section", errCARFraming)
	}
	if l > MaxCARBlockBytes {
		return nil, 0, fmt.Errorf("section of %d bytes (the limit is %d)", l, MaxCARBlockBytes)
	}
	growBuf(buf, int(l))
	sec := (*buf)[:l]
	if _, err := io.ReadFull(br, sec); err != nil {
		return nil, 0, noEOF(err)
	}
	return sec, uvarintLen(l), nil
}

// growBuf makes *buf hold at least n bytes, growing it by doubling.
func growBuf(buf *[]byte, n int) {
	if cap(*buf) < n {
		*buf = make([]byte, max(n, 2*cap(*buf), 4<<10))
	}
}

// noEOF turns an end of input inside a structure into ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}

// carRoot validates a CARv1 header the way go-car does (readCARHeader is
// checked against it) and returns its first root.
func carRoot(hdr []byte) (cid.Cid, error) {
	version, err := (&cborReader{b: hdr}).readCARHeader()
	if err != nil {
		return cid.Undef, err
	}
	if version != 1 {
		return cid.Undef, fmt.Errorf("CAR version %d", version)
	}
	// The header is valid: find roots again and take the first.
	r := &cborReader{b: hdr}
	n, _ := r.mapLen()
	for range n {
		k, _ := r.text()
		if unsafeString(k) != "roots" {
			if err := r.skip(0); err != nil {
				return cid.Undef, err
			}
			continue
		}
		if r.i < len(r.b) && r.b[r.i] == 0xf6 {
			break
		}
		if _, l, err := r.head(); err != nil || l == 0 {
			break
		}
		b, err := r.link()
		if err != nil || b == nil {
			return cid.Undef, errCBOR
		}
		return cid.Cast(b)
	}
	return cid.Undef, errors.New("CAR header has no root")
}

// readLoc reads the section at loc from the spool into *buf and returns its
// block if its CID is c (a hash collision in the index gives another CID:
// found is false).
func readLoc(spool io.ReaderAt, loc uint64, c cid.Cid, buf *[]byte) (data []byte, found bool, err error) {
	n := locLen(loc)
	growBuf(buf, n)
	sec := (*buf)[:n]
	if _, err := spool.ReadAt(sec, locOff(loc)); err != nil {
		return nil, false, fmt.Errorf("read spooled CAR: %w", noEOF(err))
	}
	// CIDs are self-delimiting: a section that starts with c's bytes holds c.
	kb := c.KeyString()
	if kb == "" || len(sec) < len(kb) || string(sec[:len(kb)]) != kb {
		return nil, false, nil
	}
	return sec[len(kb):], true, nil
}

// scanCAR reads the spool's sections once, in order, and sets want[k] to
// the location of the first block whose CID key is k. It is how blocks the
// index could not hold are found: one pass resolves any number of CIDs.
func scanCAR(ctx context.Context, spool io.ReaderAt, cf *carFile, want map[string]uint64) error {
	br := bufio.NewReaderSize(io.NewSectionReader(spool, cf.start, cf.size-cf.start), int(min(scanBufBytes, cf.size)))
	pos := cf.start
	left := len(want)
	var buf []byte
	for n := 0; pos < cf.size && left > 0; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		sec, vlen, err := readSection(br, &buf)
		if err != nil {
			return fmt.Errorf("scan spooled CAR at byte %d: %w", pos, err)
		}
		cl, err := cidLen(sec)
		if err != nil {
			return fmt.Errorf("scan spooled CAR at byte %d: %w", pos, err)
		}
		off := pos + int64(vlen)
		if loc, ok := want[string(sec[:cl])]; ok && loc == 0 {
			want[string(sec[:cl])] = packLoc(off, len(sec), looksLikeMSTNode(sec[cl:]))
			left--
		}
		pos = off + int64(len(sec))
	}
	return nil
}
