package firehose

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/ipfs/go-cid"
)

// oldReadRepoCAR is ReadRepoCAR as it was before snapshots were streamed:
// indigo's LoadRepoFromCAR (every block in memory, every block hashed by
// go-car), then a walk of the whole MST. It is the reference the streaming
// reader is checked against, in tests, the fuzz target and the benchmark.
// It panics on some malformed MST nodes; that is turned into an error.
func oldReadRepoCAR(ctx context.Context, car []byte, keep func(string) bool) (snap *Snapshot, err error) {
	defer func() {
		if p := recover(); p != nil {
			snap, err = nil, fmt.Errorf("old reader panicked: %v", p)
		}
	}()
	commit, r, err := repo.LoadRepoFromCAR(ctx, bytes.NewReader(car))
	if err != nil {
		return nil, fmt.Errorf("read CAR: %w", err)
	}
	snap = &Snapshot{DID: commit.DID, Rev: commit.Rev, Commit: commit.Data}
	err = r.MST.Walk(func(key []byte, val cid.Cid) error {
		path := string(key)
		coll, rkey, ok := strings.Cut(path, "/")
		if !ok {
			return nil
		}
		if keep != nil && !keep(coll) {
			return nil
		}
		rec := Record{Collection: coll, RKey: rkey, CID: val}
		blk, err := r.RecordStore.Get(ctx, val)
		switch {
		case err != nil:
			rec.Err = &OpError{Reason: ReasonMissingBlock, Detail: "record block " + val.String() + " is not in the CAR"}
		default:
			sum, herr := val.Prefix().Sum(blk.RawData())
			if herr != nil || !sum.Equals(val) {
				rec.Err = &OpError{Reason: ReasonCIDMismatch, Detail: "block does not hash to " + val.String()}
				break
			}
			rec.Value, rec.Err = DecodeRecord(blk.RawData())
		}
		snap.Records = append(snap.Records, rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk MST: %w", err)
	}
	sort.Slice(snap.Records, func(i, j int) bool { return snap.Records[i].Path() < snap.Records[j].Path() })
	return snap, nil
}

// oldGetRepoBody is what GetRepo did with a getRepo body before: read it
// all (up to the limit), then oldReadRepoCAR.
func oldGetRepoBody(ctx context.Context, body io.Reader, maxBytes int64, keep func(string) bool) (*Snapshot, error) {
	data, err := io.ReadAll(io.LimitReader(body, maxBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > maxBytes {
		return nil, fmt.Errorf("CAR larger than %d bytes", maxBytes)
	}
	return oldReadRepoCAR(ctx, data, keep)
}

// carSection is one block of a CAR, for tests that rewrite CARs.
type carSection struct {
	c    cid.Cid
	data []byte
}

// splitCAR cuts a well-formed CARv1 into its header (with its length
// prefix) and sections.
func splitCAR(t testing.TB, car []byte) ([]byte, []carSection) {
	t.Helper()
	hl, n := binary.Uvarint(car)
	if n <= 0 {
		t.Fatal("CAR header length")
	}
	head := car[:n+int(hl)]
	var secs []carSection
	for p := len(head); p < len(car); {
		l, m := binary.Uvarint(car[p:])
		if m <= 0 {
			t.Fatal("CAR section length")
		}
		sec := car[p+m : p+m+int(l)]
		cl, c, err := cid.CidFromBytes(sec)
		if err != nil {
			t.Fatal(err)
		}
		secs = append(secs, carSection{c: c, data: sec[cl:]})
		p += m + int(l)
	}
	return head, secs
}

// joinCAR writes a CAR from a header and sections.
func joinCAR(head []byte, secs []carSection) []byte {
	out := bytes.Clone(head)
	for _, s := range secs {
		out = binary.AppendUvarint(out, uint64(len(s.c.Bytes())+len(s.data)))
		out = append(out, s.c.Bytes()...)
		out = append(out, s.data...)
	}
	return out
}

// shuffleCAR returns car with its blocks in a random order.
func shuffleCAR(t testing.TB, car []byte, rng *rand.Rand) []byte {
	head, secs := splitCAR(t, car)
	rng.Shuffle(len(secs), func(i, j int) { secs[i], secs[j] = secs[j], secs[i] })
	return joinCAR(head, secs)
}

// editCAR returns car with fn applied to each section (false drops it).
func editCAR(t testing.TB, car []byte, fn func(*carSection) bool) []byte {
	head, secs := splitCAR(t, car)
	out := secs[:0]
	for i := range secs {
		if fn(&secs[i]) {
			out = append(out, secs[i])
		}
	}
	return joinCAR(head, out)
}
