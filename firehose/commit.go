package firehose

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/spaces-authz/spaces-authz/view"
)

// The zero-copy reader of #commit frames, the hot path: a commit is read
// without copying its CAR, and an op the filter rejects costs no
// allocation. It accepts what indigo's generated decoder
// (comatproto.SyncSubscribeRepos_Commit.UnmarshalCBOR) accepts and reads
// it the same way; genReader holds the CBOR rules.

// readHeader reads the frame header {op, t} as events.EventHeader's
// decoder does.
func (r *genReader) readHeader() (op int64, typ []byte, err error) {
	n, err := r.mapHead()
	if err != nil {
		return 0, nil, err
	}
	for range n {
		k, err := r.text()
		if err != nil {
			return 0, nil, err
		}
		switch unsafeString(k) {
		case "op":
			op, err = r.int64()
		case "t":
			typ, err = r.text()
		default:
			err = r.scan()
		}
		if err != nil {
			return 0, nil, err
		}
	}
	return op, typ, nil
}

// commitReader reads one #commit body.
type commitReader struct {
	genReader
	ev      *Event
	dropped []OpError
}

// decodeCommit reads a #commit body: the event, the CAR (a view into b,
// nil when no op was kept) and the ops dropped as unreadable.
//
// Every field the generated decoder knows is checked as it checks it,
// including those not used here (commit, prevData, blobs, rebase, an op's
// prev), and unknown fields are scanned as it scans them. A key given
// twice is read twice and the later value wins, as the generated code
// assigns fields in order, except where it keeps the earlier one:
//   - ops: an empty later array leaves the earlier ops in place (it
//     allocates only for a non-empty array);
//   - blocks: an empty later byte string makes the next len(earlier) bytes
//     of the frame the blocks (it reads into the earlier slice);
//   - since, and an op's cid: a later null leaves the earlier value.
//
// More than 8,192 ops (the generated decoder's array cap) refuse the
// frame, as indigo refuses it. The lexicon's limit of 200 is not enforced
// by indigo, nor here: such a commit is read whole.
//
// An op whose path or action can't be read does not refuse the frame: it
// is dropped (see addOp).
func decodeCommit(b []byte, filter Filter) (*Event, []byte, []OpError, error) {
	// filter is passed down, not kept in c: stored, it would escape, and a
	// method value given as filter would cost its caller an allocation.
	c := &commitReader{genReader: genReader{b: b}, ev: &Event{Kind: KindCommit, FrameBytes: len(b)}}
	n, err := c.mapHead()
	if err != nil {
		return nil, nil, nil, bad(ReasonMalformedFrame, "#commit: %w", err)
	}
	ev := c.ev
	var blocks, did, rev, since, tm []byte // views into b, copied once at the end
	for range n {
		k, err := c.text()
		if err != nil {
			return nil, nil, nil, bad(ReasonMalformedFrame, "#commit key: %w", err)
		}
		switch unsafeString(k) {
		case "repo":
			did, err = c.text()
		case "rev":
			rev, err = c.text()
		case "time":
			tm, err = c.text()
		case "since":
			if !c.null() {
				since, err = c.text()
			}
		case "seq":
			ev.Seq, err = c.int64()
		case "tooBig":
			ev.TooBig, err = c.bool()
		case "rebase":
			_, err = c.bool()
		case "commit":
			_, err = c.link()
		case "prevData":
			_, err = c.optLink()
		case "blobs":
			err = c.links()
		case "blocks":
			blocks, err = c.blocks(blocks)
		case "ops":
			err = c.ops(filter)
		default:
			err = c.scan()
		}
		if err != nil {
			return nil, nil, nil, bad(ReasonMalformedFrame, "#commit %q: %w", view.Clip(string(k)), err)
		}
	}
	if len(did) == 0 || len(rev) == 0 {
		return nil, nil, nil, bad(ReasonMalformedFrame, "#commit without a repo or a rev")
	}
	ev.DID, ev.Rev, ev.Since, ev.Time = copyStrings(did, rev, since, tm)
	if len(ev.Ops) == 0 {
		blocks = nil
	}
	return ev, blocks, c.dropped, nil
}

// copyStrings copies four byte views into strings with one allocation
// (they share a backing array): the per-frame allocations are most of a
// no-match frame's cost.
func copyStrings(a, b, c, d []byte) (string, string, string, string) {
	var buf [256]byte
	all := string(append(append(append(append(buf[:0], a...), b...), c...), d...))
	i, j, k := len(a), len(a)+len(b), len(a)+len(b)+len(c)
	return all[:i], all[i:j], all[j:k], all[k:]
}

// blocks reads the blocks field, given the earlier one.
func (c *commitReader) blocks(earlier []byte) ([]byte, error) {
	m, n, err := c.head()
	if err != nil {
		return nil, err
	}
	if n > genMaxBlocks {
		return nil, errTooLong
	}
	if m != majBytes {
		return nil, errCBOR
	}
	if n == 0 {
		n = uint64(len(earlier))
	}
	return c.span(n)
}

// ops reads the ops field.
func (c *commitReader) ops(filter Filter) error {
	m, n, err := c.head()
	if err != nil {
		return err
	}
	if n > genMaxLength {
		return fmt.Errorf("%d ops: %w", n, errTooLong)
	}
	if m != majArray {
		return errCBOR
	}
	if n == 0 {
		return nil
	}
	c.ev.Ops, c.ev.OpCount, c.ev.Malformed, c.dropped = c.ev.Ops[:0], int(n), "", c.dropped[:0]
	for i := range n {
		if err := c.op(filter); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
	}
	return nil
}

// op reads one entry of ops: a repoOp, or null (a nil op to the generated
// decoder: it has no path).
func (c *commitReader) op(filter Filter) error {
	if c.null() {
		c.drop(ReasonBadPath, "null op", true)
		return nil
	}
	n, err := c.mapHead()
	if err != nil {
		return err
	}
	var action, path, link []byte
	for range n {
		k, err := c.text()
		if err != nil {
			return err
		}
		switch unsafeString(k) {
		case "action":
			action, err = c.text()
		case "path":
			path, err = c.text()
		case "cid":
			var l []byte
			if l, err = c.optLink(); l != nil {
				link = l
			}
		case "prev":
			_, err = c.optLink()
		default:
			err = c.scan()
		}
		if err != nil {
			return fmt.Errorf("%q: %w", view.Clip(string(k)), err)
		}
	}
	c.addOp(action, path, link, filter)
	return nil
}

// addOp keeps an op whose path passes the filter. An op whose path or
// action can't be read is dropped instead, and makes the commit Malformed
// when it may touch a projected collection: the filter passes its path,
// or its path can't be split into collection and rkey (it could name any
// collection), or there is no filter. Only the dropped and the kept ops
// allocate.
func (c *commitReader) addOp(action, path, link []byte, filter Filter) {
	p := unsafeString(path)
	keep := filter == nil || filter(p)
	slash := bytes.IndexByte(path, '/')
	split := slash >= 0 && bytes.IndexByte(path[slash+1:], '/') < 0
	if !split || !validNSID(p[:slash]) || !validRecordKey(p[slash+1:]) {
		c.drop(ReasonBadPath, pathProblem(p), keep || !split)
		return
	}
	var act Action
	switch unsafeString(action) {
	case "create":
		act = ActionCreate
	case "update":
		act = ActionUpdate
	case "delete":
		act = ActionDelete
	default:
		c.drop(ReasonBadAction, fmt.Sprintf("action %q on %q", view.Clip(string(action)), view.Clip(p)), keep)
		return
	}
	if act != ActionDelete && link == nil {
		c.drop(ReasonBadAction, fmt.Sprintf("%s of %q without a cid", act, view.Clip(p)), keep)
		return
	}
	if !keep {
		return
	}
	s := string(path)
	o := Op{Action: act, Collection: s[:slash], RKey: s[slash+1:]}
	if act != ActionDelete {
		// link() checked it: Cast can't fail.
		o.CID, _ = cid.Cast(link)
	}
	c.ev.Ops = append(c.ev.Ops, o)
}

// drop records an op removed for reason; projected makes the commit
// Malformed (with the first such reason).
func (c *commitReader) drop(reason, detail string, projected bool) {
	c.dropped = append(c.dropped, OpError{Reason: reason, Detail: detail})
	if projected && c.ev.Malformed == "" {
		c.ev.Malformed = reason
	}
}

// pathProblem says why path is not collection/rkey.
func pathProblem(path string) string {
	coll, rkey, ok := strings.Cut(path, "/")
	switch {
	case !ok || strings.Contains(rkey, "/"):
		return fmt.Sprintf("op path %q is not collection/rkey", view.Clip(path))
	case !validNSID(coll):
		return fmt.Sprintf("op path %q: the collection is not an NSID", view.Clip(path))
	}
	return fmt.Sprintf("op path %q: not a valid record key", view.Clip(path))
}
