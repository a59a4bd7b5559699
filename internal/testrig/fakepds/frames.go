package fakepds

import (
	"bytes"
	"fmt"
	"io"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/events"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	cbg "github.com/whyrusleeping/cbor-gen"
)

// EncodeFrame serialises a stream message: the CBOR header {op, t} followed
// by the CBOR body, exactly as a PDS sends it.
func EncodeFrame(msgType string, body cbg.CBORMarshaler) ([]byte, error) {
	var buf bytes.Buffer
	h := events.EventHeader{Op: events.EvtKindMessage, MsgType: msgType}
	if err := h.MarshalCBOR(&buf); err != nil {
		return nil, fmt.Errorf("fakepds: encode header: %w", err)
	}
	if err := body.MarshalCBOR(&buf); err != nil {
		return nil, fmt.Errorf("fakepds: encode %s: %w", msgType, err)
	}
	return buf.Bytes(), nil
}

// EncodeErrorFrame serialises an error frame ({op: -1} + {error, message}).
func EncodeErrorFrame(name, message string) ([]byte, error) {
	var buf bytes.Buffer
	h := events.EventHeader{Op: events.EvtKindErrorFrame}
	if err := h.MarshalCBOR(&buf); err != nil {
		return nil, err
	}
	ef := events.ErrorFrame{Error: name, Message: message}
	if err := ef.MarshalCBOR(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// CommitFrame encodes c as the #commit event with seq.
func CommitFrame(c *Commit, seq int64, time string) ([]byte, error) {
	msg := &comatproto.SyncSubscribeRepos_Commit{
		Repo:   c.DID,
		Rev:    c.Rev,
		Seq:    seq,
		Time:   time,
		Commit: lexutil.LexLink(c.CID),
		Blocks: lexutil.LexBytes(c.Blocks),
		Blobs:  []lexutil.LexLink{},
		Ops:    make([]*comatproto.SyncSubscribeRepos_RepoOp, 0, len(c.Ops)),
	}
	if c.Since != "" {
		since := c.Since
		msg.Since = &since
	}
	if c.PrevData != nil {
		l := lexutil.LexLink(*c.PrevData)
		msg.PrevData = &l
	}
	for _, op := range c.Ops {
		o := &comatproto.SyncSubscribeRepos_RepoOp{Action: op.Action, Path: op.Path}
		if op.CID != nil {
			l := lexutil.LexLink(*op.CID)
			o.Cid = &l
		}
		if op.Prev != nil {
			l := lexutil.LexLink(*op.Prev)
			o.Prev = &l
		}
		msg.Ops = append(msg.Ops, o)
	}
	return EncodeFrame("#commit", msg)
}

// Empty is an empty CBOR map body, for frames whose body doesn't matter.
type Empty struct{}

// MarshalCBOR writes an empty map.
func (Empty) MarshalCBOR(w io.Writer) error {
	_, err := w.Write([]byte{0xa0})
	return err
}
