package fakepds

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"
	"sync"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
	"github.com/multiformats/go-multihash"
)

var cborPrefix = cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256)

// Write is one record operation of a commit.
type Write struct {
	Action string // "create", "update" or "delete"
	// Collection and RKey name the record.
	Collection string
	RKey       string
	// Value is the record (create and update).
	Value map[string]any
	// RawValue, when set, is used as the record block instead of encoding
	// Value (to send bytes that are not valid CBOR, for instance).
	RawValue []byte
}

// Path is the write's repo path.
func (w Write) Path() string { return w.Collection + "/" + w.RKey }

// OpOut is an op of a built commit, as it appears in a #commit frame.
type OpOut struct {
	Action string
	Path   string
	CID    *cid.Cid
	Prev   *cid.Cid
}

// Commit is a signed commit built by Repo.Apply.
type Commit struct {
	DID      string
	Rev      string
	Since    string
	CID      cid.Cid
	PrevData *cid.Cid
	Ops      []OpOut
	// Blocks is the CAR diff: the commit block, the MST nodes that changed,
	// and the new record blocks.
	Blocks []byte
}

// Repo is an account's repository, mutated commit by commit with indigo's
// MST and signed with the account's key.
type Repo struct {
	mu      sync.Mutex
	did     string
	key     *atcrypto.PrivateKeyK256
	clock   *syntax.TIDClock
	tree    mst.Tree
	records map[string]recordBlock
	rev     string
	// head is the last signed commit block, which getRepo exports.
	head blocks.Block
	// omit holds paths whose record block Export leaves out.
	omit map[string]bool
}

// OmitFromExport makes Export leave out the record block of path (or put
// it back with false), as a PDS that lost a block serves an incomplete
// repo: the MST still names the record.
func (r *Repo) OmitFromExport(path string, omit bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.omit == nil {
		r.omit = map[string]bool{}
	}
	r.omit[path] = omit
}

type recordBlock struct {
	cid  cid.Cid
	data []byte
}

// NewRepo starts an empty repo for did, with a fresh signing key.
func NewRepo(did string) (*Repo, error) {
	if _, err := syntax.ParseDID(did); err != nil {
		return nil, fmt.Errorf("fakepds: new repo: %w", err)
	}
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, fmt.Errorf("fakepds: new repo: key: %w", err)
	}
	return &Repo{did: did, key: key, clock: syntax.NewTIDClock(0), tree: mst.NewEmptyTree(),
		records: map[string]recordBlock{}}, nil
}

// DID of the repo.
func (r *Repo) DID() string { return r.did }

// Rev is the rev of the last commit ("" before the first).
func (r *Repo) Rev() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rev
}

// Records returns the current records, decoded, by path.
func (r *Repo) Records() map[string]map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]map[string]any, len(r.records))
	for p, rb := range r.records {
		v, err := atdata.UnmarshalCBOR(rb.data)
		if err != nil {
			v = nil
		}
		out[p] = v
	}
	return out
}

// EncodeRecord returns the DAG-CBOR bytes and CID of a record value.
func EncodeRecord(v map[string]any) ([]byte, cid.Cid, error) {
	b, err := atdata.MarshalCBOR(v)
	if err != nil {
		return nil, cid.Undef, err
	}
	c, err := cborPrefix.Sum(b)
	return b, c, err
}

// Apply makes one signed commit from writes. An update or delete of a
// missing record, or a create of an existing one, is an error, as on a PDS.
func (r *Repo) Apply(writes ...Write) (*Commit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx := context.Background()
	var prevData *cid.Cid
	if r.rev != "" {
		root, err := r.tree.RootCID()
		if err != nil {
			return nil, fmt.Errorf("fakepds: apply: root: %w", err)
		}
		prevData = root
	}
	bs := newMemBlockstore()
	var newBlocks []blocks.Block
	ops := make([]OpOut, 0, len(writes))
	for _, w := range writes {
		path := w.Path()
		old, exists := r.records[path]
		switch w.Action {
		case "create", "update":
			if w.Action == "create" && exists {
				return nil, fmt.Errorf("fakepds: create %s: record exists", path)
			}
			if w.Action == "update" && !exists {
				return nil, fmt.Errorf("fakepds: update %s: no such record", path)
			}
			data := w.RawValue
			var c cid.Cid
			var err error
			if data == nil {
				if data, c, err = EncodeRecord(w.Value); err != nil {
					return nil, fmt.Errorf("fakepds: encode %s: %w", path, err)
				}
			} else if c, err = cborPrefix.Sum(data); err != nil {
				return nil, err
			}
			if _, err := r.tree.Insert([]byte(path), c); err != nil {
				return nil, fmt.Errorf("fakepds: insert %s: %w", path, err)
			}
			r.records[path] = recordBlock{cid: c, data: data}
			blk, _ := blocks.NewBlockWithCid(data, c)
			newBlocks = append(newBlocks, blk)
			op := OpOut{Action: w.Action, Path: path, CID: &c}
			if exists {
				p := old.cid
				op.Prev = &p
			}
			ops = append(ops, op)
		case "delete":
			if !exists {
				return nil, fmt.Errorf("fakepds: delete %s: no such record", path)
			}
			if _, err := r.tree.Remove([]byte(path)); err != nil {
				return nil, fmt.Errorf("fakepds: remove %s: %w", path, err)
			}
			delete(r.records, path)
			p := old.cid
			ops = append(ops, OpOut{Action: "delete", Path: path, Prev: &p})
		default:
			return nil, fmt.Errorf("fakepds: unknown action %q", w.Action)
		}
	}
	root, err := r.tree.WriteDiffBlocks(ctx, bs)
	if err != nil {
		return nil, fmt.Errorf("fakepds: write MST: %w", err)
	}
	commit, commitBlk, err := r.sign(*root)
	if err != nil {
		return nil, err
	}
	out := &Commit{DID: r.did, Rev: commit.Rev, Since: r.rev, CID: commitBlk.Cid(), PrevData: prevData, Ops: ops}
	all := append([]blocks.Block{commitBlk}, bs.list()...)
	all = append(all, newBlocks...)
	if out.Blocks, err = writeCAR(commitBlk.Cid(), all); err != nil {
		return nil, err
	}
	r.rev = commit.Rev
	r.head = commitBlk
	return out, nil
}

func (r *Repo) sign(data cid.Cid) (*repo.Commit, blocks.Block, error) {
	c := &repo.Commit{DID: r.did, Version: repo.ATPROTO_REPO_VERSION, Data: data, Rev: r.clock.Next().String()}
	if err := c.Sign(r.key); err != nil {
		return nil, nil, fmt.Errorf("fakepds: sign: %w", err)
	}
	var buf bytes.Buffer
	if err := c.MarshalCBOR(&buf); err != nil {
		return nil, nil, fmt.Errorf("fakepds: encode commit: %w", err)
	}
	cc, err := cborPrefix.Sum(buf.Bytes())
	if err != nil {
		return nil, nil, err
	}
	blk, err := blocks.NewBlockWithCid(buf.Bytes(), cc)
	return c, blk, err
}

// SyncBlocks returns a CAR holding only the current commit block, as a
// #sync event carries it.
func (r *Repo) SyncBlocks() ([]byte, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	root, err := r.tree.RootCID()
	if err != nil {
		return nil, "", err
	}
	commit, blk, err := r.sign(*root)
	if err != nil {
		return nil, "", err
	}
	r.rev = commit.Rev
	r.head = blk
	b, err := writeCAR(blk.Cid(), []blocks.Block{blk})
	return b, commit.Rev, err
}

// Export writes the whole repo at its last commit as a CAR, as getRepo
// returns it. A repo without a commit yet gets its first (empty) one.
func (r *Repo) Export() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.head == nil {
		root, err := r.tree.RootCID()
		if err != nil {
			return nil, err
		}
		commit, blk, err := r.sign(*root)
		if err != nil {
			return nil, err
		}
		r.rev, r.head = commit.Rev, blk
	}
	m := make(map[string]cid.Cid, len(r.records))
	for p, rb := range r.records {
		m[p] = rb.cid
	}
	full, err := mst.LoadTreeFromMap(m)
	if err != nil {
		return nil, err
	}
	bs := newMemBlockstore()
	if _, err := full.WriteDiffBlocks(context.Background(), bs); err != nil {
		return nil, err
	}
	all := append([]blocks.Block{r.head}, bs.list()...)
	paths := make([]string, 0, len(r.records))
	for p := range r.records {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if r.omit[p] {
			continue
		}
		rb := r.records[p]
		b, _ := blocks.NewBlockWithCid(rb.data, rb.cid)
		all = append(all, b)
	}
	return writeCAR(r.head.Cid(), all)
}

func writeCAR(root cid.Cid, blks []blocks.Block) ([]byte, error) {
	var buf bytes.Buffer
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{root}, Version: 1}, &buf); err != nil {
		return nil, fmt.Errorf("fakepds: CAR header: %w", err)
	}
	seen := map[string]bool{}
	for _, b := range blks {
		k := b.Cid().KeyString()
		if seen[k] {
			continue
		}
		seen[k] = true
		if err := carutil.LdWrite(&buf, b.Cid().Bytes(), b.RawData()); err != nil {
			return nil, fmt.Errorf("fakepds: CAR block: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// PLCDID derives a did:plc-shaped DID from a name, stable across runs.
func PLCDID(name string) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	sum := sha256.Sum256([]byte(name))
	out := make([]byte, 24)
	v := binary.BigEndian.Uint64(sum[:8])
	w := binary.BigEndian.Uint64(sum[8:16])
	for i := range out {
		if i < 12 {
			out[i] = alphabet[v%32]
			v /= 32
		} else {
			out[i] = alphabet[w%32]
			w /= 32
		}
	}
	return "did:plc:" + string(out)
}

func (r *Repo) headCID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.head == nil {
		return ""
	}
	return r.head.Cid().String()
}

// PublicKey is the repo's current signing key (what its DID document
// declares).
func (r *Repo) PublicKey() atcrypto.PublicKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	pub, err := r.key.PublicKey()
	if err != nil {
		panic(err) // a generated K-256 key always has a public half
	}
	return pub
}

// RotateKey gives the repo a fresh signing key, used from its next commit,
// and returns its public half (for the DID document).
func (r *Repo) RotateKey() (atcrypto.PublicKey, error) {
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, fmt.Errorf("fakepds: rotate key: %w", err)
	}
	r.mu.Lock()
	r.key = key
	r.mu.Unlock()
	return key.PublicKey()
}
