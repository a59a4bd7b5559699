package firehose

import (
	"encoding/binary"
	"errors"
	"unsafe"

	"github.com/ipfs/go-cid"
	"github.com/spaces-authz/spaces-authz/view"
)

// A minimal CBOR reader over a byte slice, for the hot path: #commit frames
// are decoded without copying the CAR and without allocating for ops whose
// path the filter rejects. Other frames go through indigo's generated
// decoders. The fuzz tests cover both.

var errCBOR = errors.New("malformed CBOR")

const maxDepth = 32

type cborReader struct {
	b []byte
	i int
}

const (
	majUint   = 0
	majNegint = 1
	majBytes  = 2
	majText   = 3
	majArray  = 4
	majMap    = 5
	majTag    = 6
	majSimple = 7
)

// head reads an item's major type and argument.
func (r *cborReader) head() (major byte, arg uint64, err error) {
	if r.i >= len(r.b) {
		return 0, 0, errCBOR
	}
	c := r.b[r.i]
	r.i++
	major, info := c>>5, c&0x1f
	rest := r.b[r.i:]
	switch info {
	case 24:
		if len(rest) < 1 {
			return 0, 0, errCBOR
		}
		r.i++
		return major, uint64(rest[0]), nil
	case 25:
		if len(rest) < 2 {
			return 0, 0, errCBOR
		}
		r.i += 2
		return major, uint64(binary.BigEndian.Uint16(rest)), nil
	case 26:
		if len(rest) < 4 {
			return 0, 0, errCBOR
		}
		r.i += 4
		return major, uint64(binary.BigEndian.Uint32(rest)), nil
	case 27:
		if len(rest) < 8 {
			return 0, 0, errCBOR
		}
		r.i += 8
		return major, binary.BigEndian.Uint64(rest), nil
	}
	if info < 24 {
		return major, uint64(info), nil
	}
	return 0, 0, errCBOR // indefinite lengths are not allowed in DAG-CBOR
}

// span returns the next n bytes without copying.
func (r *cborReader) span(n uint64) ([]byte, error) {
	if n > uint64(len(r.b)-r.i) {
		return nil, errCBOR
	}
	s := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return s, nil
}

func (r *cborReader) text() ([]byte, error) {
	m, n, err := r.head()
	if err != nil || m != majText {
		return nil, errCBOR
	}
	return r.span(n)
}

func (r *cborReader) uint() (uint64, error) {
	m, n, err := r.head()
	if err != nil || m != majUint {
		return 0, errCBOR
	}
	return n, nil
}

// optText reads a text string or null.
func (r *cborReader) optText() ([]byte, bool, error) {
	if r.i < len(r.b) && r.b[r.i] == 0xf6 {
		r.i++
		return nil, false, nil
	}
	t, err := r.text()
	return t, true, err
}

func (r *cborReader) bool() (bool, error) {
	if r.i >= len(r.b) {
		return false, errCBOR
	}
	switch r.b[r.i] {
	case 0xf4:
		r.i++
		return false, nil
	case 0xf5:
		r.i++
		return true, nil
	}
	return false, errCBOR
}

// link reads a DAG-CBOR CID (tag 42 around 0x00 + binary CID) or null.
func (r *cborReader) link() ([]byte, error) {
	if r.i < len(r.b) && r.b[r.i] == 0xf6 {
		r.i++
		return nil, nil
	}
	m, tag, err := r.head()
	if err != nil || m != majTag || tag != 42 {
		return nil, errCBOR
	}
	m, n, err := r.head()
	if err != nil || m != majBytes || n < 2 {
		return nil, errCBOR
	}
	b, err := r.span(n)
	if err != nil || b[0] != 0 {
		return nil, errCBOR
	}
	return b[1:], nil
}

// skip passes over one item.
func (r *cborReader) skip(depth int) error {
	if depth > maxDepth {
		return errCBOR
	}
	m, n, err := r.head()
	if err != nil {
		return err
	}
	switch m {
	case majUint, majNegint, majSimple:
		return nil
	case majBytes, majText:
		_, err := r.span(n)
		return err
	case majArray:
		for range n {
			if err := r.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case majMap:
		for range n {
			if err := r.skip(depth + 1); err != nil {
				return err
			}
			if err := r.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case majTag:
		return r.skip(depth + 1)
	}
	return errCBOR
}

// mapLen reads a map header.
func (r *cborReader) mapLen() (uint64, error) {
	m, n, err := r.head()
	if err != nil || m != majMap || n > uint64(len(r.b)) {
		return 0, errCBOR
	}
	return n, nil
}

// unsafeString views b as a string without copying, for lookups and filter
// calls that don't keep it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// readHeader decodes the frame header {op, t}.
func (r *cborReader) readHeader() (op int64, typ []byte, err error) {
	n, err := r.mapLen()
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
			m, v, err := r.head()
			if err != nil {
				return 0, nil, err
			}
			switch m {
			case majUint:
				op = int64(v)
			case majNegint:
				op = -1 - int64(v)
			default:
				return 0, nil, errCBOR
			}
		case "t":
			if typ, err = r.text(); err != nil {
				return 0, nil, err
			}
		default:
			if err := r.skip(0); err != nil {
				return 0, nil, err
			}
		}
	}
	return op, typ, nil
}

// decodeCommit reads a #commit body. Ops whose path fails filter are only
// counted; the CAR slice aliases b and is returned only when an op matched.
func decodeCommit(b []byte, filter Filter) (*Event, []byte, error) {
	r := &cborReader{b: b}
	n, err := r.mapLen()
	if err != nil {
		return nil, nil, bad(ReasonMalformedFrame, "#commit: %w", err)
	}
	ev := &Event{Kind: KindCommit, FrameBytes: len(b)}
	var blocks []byte
	var haveRepo, haveRev, haveSeq bool
	var did, rev, since, tm []byte // views into b, copied once at the end
	for range n {
		k, err := r.text()
		if err != nil {
			return nil, nil, bad(ReasonMalformedFrame, "#commit key: %w", err)
		}
		switch unsafeString(k) {
		case "repo":
			t, err := r.text()
			if err != nil {
				return nil, nil, bad(ReasonMalformedFrame, "#commit repo: %w", err)
			}
			did, haveRepo = t, true
		case "rev":
			t, err := r.text()
			if err != nil {
				return nil, nil, bad(ReasonMalformedFrame, "#commit rev: %w", err)
			}
			rev, haveRev = t, true
		case "since":
			t, ok, err := r.optText()
			if err != nil {
				return nil, nil, bad(ReasonMalformedFrame, "#commit since: %w", err)
			}
			if ok {
				since = t
			}
		case "time":
			t, err := r.text()
			if err != nil {
				return nil, nil, bad(ReasonMalformedFrame, "#commit time: %w", err)
			}
			tm = t
		case "seq":
			v, err := r.uint()
			if err != nil || v > 1<<62 {
				return nil, nil, bad(ReasonMalformedFrame, "#commit seq")
			}
			ev.Seq, haveSeq = int64(v), true
		case "tooBig":
			if ev.TooBig, err = r.bool(); err != nil {
				return nil, nil, bad(ReasonMalformedFrame, "#commit tooBig")
			}
		case "blocks":
			m, l, err := r.head()
			if err != nil || m != majBytes {
				return nil, nil, bad(ReasonMalformedFrame, "#commit blocks")
			}
			if blocks, err = r.span(l); err != nil {
				return nil, nil, bad(ReasonMalformedFrame, "#commit blocks")
			}
		case "ops":
			m, l, err := r.head()
			if err != nil || m != majArray || l > uint64(len(b)) {
				return nil, nil, bad(ReasonMalformedFrame, "#commit ops")
			}
			ev.OpCount = int(l)
			for range l {
				op, keep, err := r.readOp(filter)
				if err != nil {
					return nil, nil, err
				}
				if keep {
					ev.Ops = append(ev.Ops, op)
				}
			}
		default:
			if err := r.skip(0); err != nil {
				return nil, nil, bad(ReasonMalformedFrame, "#commit %q: %w", view.Clip(string(k)), err)
			}
		}
	}
	if !haveRepo || !haveRev || !haveSeq {
		return nil, nil, bad(ReasonMalformedFrame, "#commit without repo, rev or seq")
	}
	ev.DID, ev.Rev, ev.Since, ev.Time = copyStrings(did, rev, since, tm)
	if len(ev.Ops) == 0 {
		blocks = nil
	}
	return ev, blocks, nil
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

// readOp reads one repoOp; it allocates only when the path passes filter.
func (r *cborReader) readOp(filter Filter) (Op, bool, error) {
	n, err := r.mapLen()
	if err != nil {
		return Op{}, false, bad(ReasonMalformedFrame, "op: %w", err)
	}
	var action, path, cidBytes []byte
	for range n {
		k, err := r.text()
		if err != nil {
			return Op{}, false, bad(ReasonMalformedFrame, "op key: %w", err)
		}
		switch unsafeString(k) {
		case "action":
			action, err = r.text()
		case "path":
			path, err = r.text()
		case "cid":
			cidBytes, err = r.link()
		default:
			err = r.skip(0)
		}
		if err != nil {
			return Op{}, false, bad(ReasonMalformedFrame, "op %q: %w", view.Clip(string(k)), err)
		}
	}
	if filter != nil && !filter(unsafeString(path)) {
		return Op{}, false, nil
	}
	p := string(path)
	a := string(action)
	var c *cid.Cid
	if cidBytes != nil {
		parsed, err := cid.Cast(cidBytes)
		if err != nil {
			return Op{}, false, bad(ReasonBadAction, "op %q: cid: %w", view.Clip(p), err)
		}
		c = &parsed
	}
	op, err := parseOpFields(a, p, c)
	return op, true, err
}

// parseOpFields validates a kept op.
func parseOpFields(action, path string, c *cid.Cid) (Op, error) {
	coll, rkey, err := splitOpPath(path)
	if err != nil {
		return Op{}, err
	}
	o := Op{Action: Action(action), Collection: coll, RKey: rkey}
	switch o.Action {
	case ActionCreate, ActionUpdate:
		if c == nil {
			return Op{}, bad(ReasonBadAction, "%s of %q without a cid", action, view.Clip(path))
		}
		o.CID = *c
	case ActionDelete:
	default:
		return Op{}, bad(ReasonBadAction, "action %q", view.Clip(action))
	}
	return o, nil
}

// readCARHeader reads a CARv1 header ({roots: [links], version}) and
// returns its version, accepting what go-car's header decode accepts (a
// differential test and fuzz target check that). The roots must be valid CIDs but are not used: the
// consumer finds records by their ops' CIDs.
func (r *cborReader) readCARHeader() (version uint64, err error) {
	n, err := r.mapLen()
	if err != nil {
		return 0, err
	}
	for range n {
		k, err := r.text()
		if err != nil {
			return 0, err
		}
		switch unsafeString(k) {
		case "version":
			if version, err = r.uint(); err != nil {
				return 0, err
			}
		case "roots":
			if r.i < len(r.b) && r.b[r.i] == 0xf6 { // null, as go-car writes no roots
				r.i++
				continue
			}
			m, l, err := r.head()
			if err != nil || m != majArray || l > uint64(len(r.b)) {
				return 0, errCBOR
			}
			for range l {
				b, err := r.link()
				if err != nil || b == nil {
					return 0, errCBOR
				}
				if _, err := cid.Cast(b); err != nil {
					return 0, err
				}
			}
		default: // go-car refuses unknown fields too
			return 0, errCBOR
		}
	}
	if r.i != len(r.b) {
		return 0, errCBOR
	}
	return version, nil
}
