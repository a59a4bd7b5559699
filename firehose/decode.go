package firehose

import (
	"bytes"
	"encoding/binary"
	"fmt"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/bluesky-social/indigo/events"
	"github.com/ipfs/go-cid"
	"github.com/spaces-authz/spaces-authz/view"
	cbg "github.com/whyrusleeping/cbor-gen"
)

// Filter decides from an op path (`collection/rkey`) whether its record is
// read. It is called before the CAR is touched. Nil means every op.
type Filter func(path string) bool

// Frame is a decoded frame: exactly one of Event, Info or Err is set.
type Frame struct {
	Event *Event
	Info  *Info
	Err   *StreamError
	// blocks is the raw CAR slice of a #commit with matching ops, decoded
	// later by DecodeRecords (off the reader goroutine).
	blocks []byte
	// dropped are the ops of a #commit removed from Ops because their path
	// or action could not be read, for the client to count and log
	// (Event.Malformed says whether any may be projected). Nil for nearly
	// every frame; a pointer keeps Frame in a smaller size class.
	dropped *[]OpError
	// raw is a copy of the whole frame of a #commit to verify (set by the
	// client when a Verifier is configured and some op matched).
	raw []byte
}

// droppedOps returns the ops DecodeFrame dropped as unreadable.
func (f *Frame) droppedOps() []OpError {
	if f.dropped == nil {
		return nil
	}
	return *f.dropped
}

// BadFrameError is returned by DecodeFrame for input that can't be used.
type BadFrameError struct {
	Reason string
	Err    error
}

func (e *BadFrameError) Error() string {
	return "firehose: bad frame (" + e.Reason + "): " + e.Err.Error()
}
func (e *BadFrameError) Unwrap() error { return e.Err }

func bad(reason string, format string, args ...any) *BadFrameError {
	return &BadFrameError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// DecodeFrame decodes one websocket message of subscribeRepos. For a #commit
// it decodes the header and ops only: ops whose path fails filter are
// counted in OpCount and dropped, and the CAR is kept aside for
// DecodeRecords only when some op matched. It never panics on hostile input
// (see the fuzz tests) and returns a *BadFrameError for anything unusable.
//
// A frame is refused whole when indigo's generated decoders refuse it (the
// zero-copy #commit reader is held to them), and for what is wrong with the
// event itself: no valid DID, no positive seq, a #commit without a rev. An
// op whose path or action can't be read only loses that op: the event is
// delivered without it, and with Malformed set when the op may touch a
// projected collection.
func DecodeFrame(b []byte, filter Filter) (*Frame, error) {
	fast := &genReader{b: b}
	op, typ, err := fast.readHeader()
	if err != nil {
		return nil, bad(ReasonMalformedFrame, "header: %w", err)
	}
	if op == events.EvtKindMessage && unsafeString(typ) == "#commit" {
		ev, blocks, dropped, err := decodeCommit(b[fast.i:], filter)
		if err != nil {
			return nil, err
		}
		if err := checkDID(ev.DID); err != nil {
			return nil, err
		}
		if ev.Seq <= 0 {
			return nil, bad(ReasonMalformedFrame, "#commit without a positive seq")
		}
		ev.FrameBytes = len(b)
		// The CAR is copied only when some op matched: the frame buffer is
		// reused for the next frame.
		f := &Frame{Event: ev, blocks: cloneBytes(blocks)}
		if len(dropped) > 0 {
			d := dropped // allocated here, on the rare path only
			f.dropped = &d
		}
		return f, nil
	}
	r := bytes.NewReader(b)
	cr := cbg.NewCborReader(r)
	h := events.EventHeader{Op: op, MsgType: string(typ)}
	if _, err := r.Seek(int64(fast.i), 0); err != nil {
		return nil, bad(ReasonMalformedFrame, "header: %w", err)
	}
	switch h.Op {
	case events.EvtKindErrorFrame:
		var ef events.ErrorFrame
		if err := ef.UnmarshalCBOR(cr); err != nil {
			return nil, bad(ReasonMalformedFrame, "error frame: %w", err)
		}
		return &Frame{Err: &StreamError{Name: ef.Error, Message: ef.Message}}, nil
	case events.EvtKindMessage:
	default:
		return nil, bad(ReasonUnknownType, "header op %d", h.Op)
	}
	f := &Frame{}
	switch h.MsgType {
	case "#sync":
		var s comatproto.SyncSubscribeRepos_Sync
		if err := s.UnmarshalCBOR(cr); err != nil {
			return nil, bad(ReasonMalformedFrame, "#sync: %w", err)
		}
		if err := checkDID(s.Did); err != nil {
			return nil, err
		}
		ev := &Event{Seq: s.Seq, Kind: KindSync, DID: s.Did, Time: s.Time, Rev: s.Rev, FrameBytes: len(b)}
		if len(s.Blocks) > 0 {
			if commit, _, err := repo.LoadCommitFromCAR(nil, bytes.NewReader(s.Blocks)); err == nil { //nolint:staticcheck // LoadCommitFromCAR ignores ctx
				ev.SyncData = commit.Data
			}
		}
		f.Event = ev
	case "#identity":
		var s comatproto.SyncSubscribeRepos_Identity
		if err := s.UnmarshalCBOR(cr); err != nil {
			return nil, bad(ReasonMalformedFrame, "#identity: %w", err)
		}
		if err := checkDID(s.Did); err != nil {
			return nil, err
		}
		ev := &Event{Seq: s.Seq, Kind: KindIdentity, DID: s.Did, Time: s.Time, FrameBytes: len(b)}
		if s.Handle != nil {
			ev.Handle = *s.Handle
		}
		f.Event = ev
	case "#account":
		var s comatproto.SyncSubscribeRepos_Account
		if err := s.UnmarshalCBOR(cr); err != nil {
			return nil, bad(ReasonMalformedFrame, "#account: %w", err)
		}
		if err := checkDID(s.Did); err != nil {
			return nil, err
		}
		ev := &Event{Seq: s.Seq, Kind: KindAccount, DID: s.Did, Time: s.Time, Active: s.Active, FrameBytes: len(b)}
		if s.Status != nil {
			ev.Status = *s.Status
		}
		f.Event = ev
	case "#info":
		var s comatproto.SyncSubscribeRepos_Info
		if err := s.UnmarshalCBOR(cr); err != nil {
			return nil, bad(ReasonMalformedFrame, "#info: %w", err)
		}
		f.Info = &Info{Name: s.Name}
		if s.Message != nil {
			f.Info.Message = *s.Message
		}
	default:
		return nil, bad(ReasonUnknownType, "message type %q", view.Clip(h.MsgType))
	}
	if f.Event != nil && f.Event.Seq <= 0 {
		return nil, bad(ReasonMalformedFrame, "%s without a positive seq", h.MsgType)
	}
	return f, nil
}

func checkDID(did string) error {
	if _, err := syntax.ParseDID(did); err != nil {
		return bad(ReasonInvalidDID, "%q: %w", view.Clip(did), err)
	}
	return nil
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

// DecodeRecords reads the records of ev's ops from the frame's CAR, checking
// each block against the op's CID. Problems are per op (Op.Err); a CAR that
// can't be read at all marks every create and update. A create whose block
// is absent and whose path is deleted later in the same commit (what
// applyWrites emits for a create+delete pair) is dropped: it never existed.
func (f *Frame) DecodeRecords() {
	ev := f.Event
	if ev == nil || len(ev.Ops) == 0 {
		return
	}
	blocks, carErr := readCAR(f.blocks)
	f.blocks = nil
	out := ev.Ops[:0]
	for i := range ev.Ops {
		op := ev.Ops[i]
		if op.Action == ActionDelete {
			out = append(out, op)
			continue
		}
		if carErr != nil {
			op.Err = &OpError{Reason: ReasonBadCAR, Detail: carErr.Error()}
			out = append(out, op)
			continue
		}
		data, ok := blocks[op.CID.KeyString()]
		if !ok {
			if deletedLater(ev.Ops[i+1:], op.Path()) {
				continue
			}
			op.Err = &OpError{Reason: ReasonMissingBlock, Detail: "record block " + op.CID.String() + " is not in the CAR"}
			out = append(out, op)
			continue
		}
		sum, err := op.CID.Prefix().Sum(data)
		if err != nil || !sum.Equals(op.CID) {
			op.Err = &OpError{Reason: ReasonCIDMismatch, Detail: "block does not hash to " + op.CID.String()}
			out = append(out, op)
			continue
		}
		rec, oerr := DecodeRecord(data)
		if oerr != nil {
			op.Err = oerr
			out = append(out, op)
			continue
		}
		op.Record = rec
		out = append(out, op)
	}
	ev.Ops = out
}

func deletedLater(ops []Op, path string) bool {
	for i := range ops {
		if ops[i].Action == ActionDelete && ops[i].Path() == path {
			return true
		}
	}
	return false
}

// readCAR indexes the blocks of a CARv1 slice by CID key, without copying
// and without hashing: DecodeRecords checks only the blocks it uses, so one
// bad block spoils its own op and not the whole commit (go-car's reader
// would reject the whole CAR).
func readCAR(b []byte) (map[string][]byte, error) {
	hlen, n := binary.Uvarint(b)
	if n <= 0 || hlen == 0 || hlen > uint64(len(b)-n) {
		return nil, fmt.Errorf("CAR header length")
	}
	hr := &cborReader{b: b[n : n+int(hlen)]}
	version, err := hr.readCARHeader()
	if err != nil {
		return nil, fmt.Errorf("CAR header: %w", err)
	}
	if version != 1 {
		return nil, fmt.Errorf("CAR version %d", version)
	}
	b = b[n+int(hlen):]
	out := make(map[string][]byte)
	for len(b) > 0 {
		l, n := binary.Uvarint(b)
		if n <= 0 || l == 0 || l > uint64(len(b)-n) {
			return nil, fmt.Errorf("CAR section length")
		}
		sec := b[n : n+int(l)]
		b = b[n+int(l):]
		cl, c, err := cid.CidFromBytes(sec)
		if err != nil {
			return nil, fmt.Errorf("CAR block CID: %w", err)
		}
		out[c.KeyString()] = sec[cl:]
	}
	return out, nil
}
