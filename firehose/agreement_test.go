package firehose

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/bluesky-social/indigo/events"
	"github.com/ipfs/go-cid"
)

// The fast #commit reader must refuse what indigo's generated decoders
// refuse and read what they accept the same way. The reference here is a
// consumer built on indigo: events.EventHeader and
// SyncSubscribeRepos_Commit's UnmarshalCBOR, then this package's rules on
// top (a valid DID, a rev, a positive seq; unreadable ops dropped, and
// Malformed set when they may be projected).

// spaceFilter keeps the ops of com.atproto.space.* collections.
func spaceFilter(path string) bool {
	coll, _, _ := strings.Cut(path, "/")
	return strings.HasPrefix(coll, "com.atproto.space.")
}

// indigoResult is what the reference makes of a frame.
type indigoResult struct {
	err    error // the frame is refused
	commit bool  // the header names a #commit message
	header events.EventHeader
	body   []byte // what follows the header
	ev     *Event
	// blocks is the commit's CAR when an op was kept (DecodeFrame drops it
	// otherwise).
	blocks []byte
	// dropped are the reasons of the ops dropped as unreadable, in order.
	dropped []string
}

func indigoDecode(b []byte, filter Filter) indigoResult {
	br := bytes.NewReader(b)
	var h events.EventHeader
	if err := h.UnmarshalCBOR(br); err != nil {
		return indigoResult{err: fmt.Errorf("header: %w", err)}
	}
	res := indigoResult{header: h, body: b[len(b)-br.Len():]}
	if h.Op != events.EvtKindMessage || h.MsgType != "#commit" {
		return res
	}
	res.commit = true
	var c comatproto.SyncSubscribeRepos_Commit
	if err := c.UnmarshalCBOR(br); err != nil {
		res.err = err
		return res
	}
	if _, err := syntax.ParseDID(c.Repo); err != nil {
		res.err = err
		return res
	}
	if c.Rev == "" || c.Seq <= 0 {
		res.err = errors.New("no rev or no positive seq")
		return res
	}
	ev := &Event{Kind: KindCommit, Seq: c.Seq, DID: c.Repo, Rev: c.Rev, Time: c.Time, TooBig: c.TooBig,
		OpCount: len(c.Ops), FrameBytes: len(b)}
	if c.Since != nil {
		ev.Since = *c.Since
	}
	for _, op := range c.Ops {
		var action, path string
		var link *cid.Cid
		if op != nil {
			action, path = op.Action, op.Path
			if op.Cid != nil {
				l := cid.Cid(*op.Cid)
				link = &l
			}
		}
		coll, rkey, ok := strings.Cut(path, "/")
		split := ok && !strings.Contains(rkey, "/")
		reason := ""
		_, nerr := syntax.ParseNSID(coll)
		_, kerr := syntax.ParseRecordKey(rkey)
		switch {
		case op == nil || !split || nerr != nil || kerr != nil:
			reason = ReasonBadPath
		case action == "delete":
		case action == "create" || action == "update":
			if link == nil {
				reason = ReasonBadAction
			}
		default:
			reason = ReasonBadAction
		}
		projected := filter == nil || !split || filter(path)
		if reason != "" {
			res.dropped = append(res.dropped, reason)
			if projected && ev.Malformed == "" {
				ev.Malformed = reason
			}
			continue
		}
		if !projected {
			continue
		}
		o := Op{Action: Action(action), Collection: coll, RKey: rkey}
		if action != "delete" {
			o.CID = *link
		}
		ev.Ops = append(ev.Ops, o)
	}
	if len(ev.Ops) > 0 {
		res.blocks = c.Blocks
	}
	res.ev = ev
	return res
}

// checkAgreement decodes b with DecodeFrame and the reference and reports
// where they differ. It returns DecodeFrame's frame (nil when refused).
func checkAgreement(t *testing.T, b []byte, filter Filter) (*Frame, indigoResult) {
	t.Helper()
	want := indigoDecode(b, filter)
	fr, err := DecodeFrame(b, filter)
	switch {
	case want.err != nil:
		if err == nil {
			t.Errorf("indigo refuses (%v), DecodeFrame accepts", want.err)
		}
		return fr, want
	case !want.commit:
		// Other messages: DecodeFrame reads their bodies with indigo's
		// decoders, so only its header reader may differ. The frame must
		// decode as it does behind the header indigo writes.
		var hb bytes.Buffer
		if herr := want.header.MarshalCBOR(&hb); herr != nil {
			t.Fatal(herr)
		}
		canon := append(hb.Bytes(), want.body...)
		fr2, err2 := DecodeFrame(canon, filter)
		if (err == nil) != (err2 == nil) {
			t.Errorf("header %+v: DecodeFrame says %v, and %v behind indigo's encoding of that header", want.header, err, err2)
			return fr, want
		}
		if err == nil {
			if fr.Event != nil && fr2.Event != nil {
				fr2.Event.FrameBytes = fr.Event.FrameBytes
			}
			if !reflect.DeepEqual(fr, fr2) {
				t.Errorf("header %+v: DecodeFrame reads %+v, and %+v behind indigo's encoding of that header", want.header, fr, fr2)
			}
		}
		return fr, want
	}
	if err != nil {
		t.Errorf("indigo accepts, DecodeFrame refuses: %v", err)
		return nil, want
	}
	got, w := fr.Event, want.ev
	if got == nil || fr.Info != nil || fr.Err != nil {
		t.Errorf("#commit decoded as %+v", fr)
		return fr, want
	}
	type fields struct {
		Kind                        Kind
		Seq                         int64
		DID, Rev, Since, Time       string
		TooBig                      bool
		OpCount, FrameBytes         int
		Malformed                   string
		HasRecord, HasErr, HasBlock bool
	}
	pick := func(e *Event) fields {
		hasRec, hasErr := false, false
		for _, o := range e.Ops {
			hasRec = hasRec || o.Record != nil
			hasErr = hasErr || o.Err != nil
		}
		return fields{e.Kind, e.Seq, e.DID, e.Rev, e.Since, e.Time, e.TooBig, e.OpCount, e.FrameBytes, e.Malformed,
			hasRec, hasErr, false}
	}
	if g, x := pick(got), pick(w); g != x {
		t.Errorf("event\n got  %+v\n want %+v", g, x)
	}
	opStr := func(ops []Op) string {
		var s []string
		for _, o := range ops {
			c := "-"
			if o.CID.Defined() {
				c = o.CID.String()
			}
			s = append(s, string(o.Action)+" "+o.Collection+"/"+o.RKey+" "+c)
		}
		return strings.Join(s, "\n")
	}
	if g, x := opStr(got.Ops), opStr(w.Ops); g != x {
		t.Errorf("ops\n got  %s\n want %s", g, x)
	}
	var dropped []string
	for _, d := range fr.droppedOps() {
		dropped = append(dropped, d.Reason)
	}
	if strings.Join(dropped, ",") != strings.Join(want.dropped, ",") {
		t.Errorf("dropped ops %v, want %v", dropped, want.dropped)
	}
	if !bytes.Equal(fr.blocks, want.blocks) {
		t.Errorf("blocks: got %d bytes %x, want %d bytes %x", len(fr.blocks), clipBytes(fr.blocks), len(want.blocks), clipBytes(want.blocks))
	}
	return fr, want
}

func clipBytes(b []byte) []byte { return b[:min(len(b), 16)] }

var (
	opA    = tOp{"create", "com.atproto.space.space/a", true}
	opB    = tOp{"create", "com.atproto.space.member/b", true}
	opPost = tOp{"create", "app.bsky.feed.post/p", true}
)

func paths(ev *Event) []string {
	var out []string
	for _, o := range ev.Ops {
		out = append(out, o.Path())
	}
	return out
}

// (a) A commit map with the key "ops" twice. cbor-gen's decoder assigns
// fields as it meets them, so the later ops array replaces the earlier,
// except that it allocates only for a non-empty array: an empty later ops
// leaves the earlier one in place.
func TestDuplicateOpsKeyAgreesWithIndigo(t *testing.T) {
	for _, tc := range []struct {
		name      string
		body      cb
		wantPaths []string
		wantCount int
	}{
		{"the later ops replaces the earlier",
			mapOf(append(commitFields(opsOf(opA, opPost)), kv{"ops", opsOf(opB)})...),
			[]string{opB.path}, 1},
		{"an empty later ops keeps the earlier",
			mapOf(append(commitFields(opsOf(opA, opPost)), kv{"ops", opsOf()})...),
			[]string{opA.path}, 2},
		{"ops first and last",
			mapOf(append([]kv{{"ops", opsOf(opA)}}, commitFields(opsOf(opB, opPost))...)...),
			[]string{opB.path}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr, want := checkAgreement(t, commitFrame(tc.body), spaceFilter)
			if want.err != nil || !reflect.DeepEqual(paths(want.ev), tc.wantPaths) || want.ev.OpCount != tc.wantCount {
				t.Fatalf("the reference reads %v / %+v; the test expects ops %v, %d in all", want.err, want.ev, tc.wantPaths, tc.wantCount)
			}
			if fr == nil || fr.Event == nil {
				t.Fatal("refused")
			}
			if got := paths(fr.Event); !reflect.DeepEqual(got, tc.wantPaths) || fr.Event.OpCount != tc.wantCount {
				t.Fatalf("ops %v (%d in all), want %v (%d)", got, fr.Event.OpCount, tc.wantPaths, tc.wantCount)
			}
		})
	}
}

// (b) cbor-gen refuses heads whose argument is not in its shortest form
// ("cbor input was not canonical"), wherever they are: the frame header,
// keys, lengths, integers, tags, and values of fields it skips.
func TestNonCanonicalCBORRefused(t *testing.T) {
	good := commitFields(opsOf(opA))
	longKey := append(cb(nil).wide(majText, 3, 24), "rev"...)
	for name, b := range map[string][]byte{
		"seq in 1+1 bytes":        commitFrame(mapOf(with(good, "seq", cb(nil).wide(majUint, 7, 24))...)),
		"seq in 1+8 bytes":        commitFrame(mapOf(with(good, "seq", cb(nil).wide(majUint, 7, 27))...)),
		"seq 300 in 1+4 bytes":    commitFrame(mapOf(with(good, "seq", cb(nil).wide(majUint, 300, 26))...)),
		"ops length in 1+1 bytes": commitFrame(mapOf(with(good, "ops", append(cb(nil).wide(majArray, 1, 24), opA.encode()...))...)),
		"commit map length in 1+2 bytes": commitFrame(func() cb {
			m := mapOf(good...)
			return append(cb(nil).wide(majMap, uint64(len(good)), 25), m[1:]...)
		}()),
		"key length in 1+1 bytes": commitFrame(append(append(cb(nil).head(majMap, uint64(len(good))), mapOf(without(good, "rev")...)[1:]...),
			append(longKey, cb(nil).text("3lbzavqw4ms2c")...)...)),
		"repo length in 1+2 bytes": commitFrame(mapOf(with(good, "repo", append(cb(nil).wide(majText, uint64(len(testDID)), 25), testDID...))...)),
		"op cid tag in 1+2 bytes": commitFrame(mapOf(with(good, "ops", cb(nil).head(majArray, 1).head(majMap, 3).
			text("cid").wide(majTag, 42, 25).head(majBytes, uint64(len(testCID.Bytes())+1)).rawBytes(append([]byte{0}, testCID.Bytes()...)).
			text("path").text(opA.path).text("action").text("create"))...)),
		"op map length in 1+1 bytes": commitFrame(mapOf(with(good, "ops", append(cb(nil).head(majArray, 1).wide(majMap, 3, 24), opA.encode()[1:]...))...)),
		"header op in 1+1 bytes": append(mapOf(kv{"t", cb(nil).text("#commit")}, kv{"op", cb(nil).wide(majUint, 1, 24)}),
			mapOf(good...)...),
		"unknown field 1 in 1+2 bytes": commitFrame(mapOf(append(good, kv{"x", cb(nil).wide(majUint, 1, 25)})...)),
		"unknown field float64 zero":   commitFrame(mapOf(append(good, kv{"x", cb(nil).wide(majSimple, 0, 27)})...)),
		"unknown field simple 16":      commitFrame(mapOf(append(good, kv{"x", cb(nil).wide(majSimple, 16, 24)})...)),
	} {
		t.Run(name, func(t *testing.T) {
			if want := indigoDecode(b, spaceFilter); want.err == nil {
				t.Fatalf("indigo accepts the frame: the case is wrong")
			}
			if _, err := DecodeFrame(b, spaceFilter); err == nil {
				t.Fatal("DecodeFrame accepts it")
			}
			checkAgreement(t, b, spaceFilter)
		})
	}
}

func (e cb) rawBytes(b []byte) cb { return append(e, b...) }

// (c) cbor-gen caps the ops array at 8192 entries (the generator's default
// array cap; the lexicon says 200, which it does not enforce): a longer
// one refuses the frame, and so does DecodeFrame.
func TestOpsCountCap(t *testing.T) {
	many := func(n int) cb {
		ops := make([]tOp, n)
		for i := range ops {
			ops[i] = tOp{"delete", fmt.Sprintf("app.bsky.feed.post/k%d", i), false}
		}
		return opsOf(ops...)
	}
	for _, tc := range []struct {
		n      int
		accept bool
	}{{200, true}, {201, true}, {8192, true}, {8193, false}, {20000, false}} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			b := commitFrame(mapOf(commitFields(many(tc.n))...))
			if want := indigoDecode(b, spaceFilter); (want.err == nil) != tc.accept {
				t.Fatalf("indigo says %v: the case is wrong", want.err)
			}
			fr, err := DecodeFrame(b, spaceFilter)
			if (err == nil) != tc.accept {
				t.Fatalf("DecodeFrame says %v, want accepted=%v", err, tc.accept)
			}
			if tc.accept && fr.Event.OpCount != tc.n {
				t.Fatalf("OpCount %d", fr.Event.OpCount)
			}
			checkAgreement(t, b, spaceFilter)
		})
	}
}

// agreementCases are further frames on which DecodeFrame must agree with
// the reference; accept is what the reference does (checked, so a wrong
// case shows).
var agreementCases = func() []struct {
	name   string
	frame  []byte
	accept bool
} {
	good := commitFields(opsOf(opA, opPost))
	frame := func(fields []kv) []byte { return commitFrame(mapOf(fields...)) }
	deep := cb(nil)
	for range 40 {
		deep = deep.head(majArray, 1)
	}
	deep = deep.head(majUint, 0)
	manyKeys := func(n int) []kv {
		out := make([]kv, n)
		for i := range out {
			out[i] = kv{fmt.Sprintf("k%d", i), cb(nil).head(majUint, 0)}
		}
		return out
	}
	opWith := func(extra ...kv) cb {
		return cb(nil).head(majArray, 1).rawBytes(mapOf(append([]kv{{"path", cb(nil).text(opA.path)}, {"action", cb(nil).text("create")}}, extra...)...))
	}
	link := cb(nil).link(testCID)
	bad := []byte{1, 0x71, 0x12, 0x20, 1, 2} // a CIDv1 whose digest is cut short
	errorBody := mapOf(kv{"error", cb(nil).text("FutureCursor")}, kv{"message", cb(nil).text("x")})
	type c = struct {
		name   string
		frame  []byte
		accept bool
	}
	return []c{
		{"good", frame(good), true},
		{"trailing bytes after the body", append(frame(good), 0xff, 0x00), true},
		{"unknown field nested 40 deep", frame(append(good, kv{"x", deep})), true},
		{"unknown field with a map of 9000 keys", frame(append(good, kv{"x", mapOf(manyKeys(9000)...)})), true},
		{"unknown field with a link that is not a CID", frame(append(good, kv{"x", cb(nil).rawLink(bad)})), false},
		{"unknown field with a link of 120 bytes", frame(append(good, kv{"x", cb(nil).rawLink(make([]byte, 119))})), false},
		{"unknown field with an indefinite array", frame(append(good, kv{"x", cb{0x9f, 0xff}})), false},
		{"unknown field with an undefined value", frame(append(good, kv{"x", cb{0xf7}})), true},
		{"unknown field with another tag", frame(append(good, kv{"x", cb(nil).head(majTag, 1).head(majUint, 5)})), true},
		{"key longer than any field name", frame(append(good, kv{"prevDataX", cb(nil).text("x")})), true},
		{"key that is not text", commitFrame(cb(nil).head(majMap, 1).head(majUint, 1).head(majUint, 0)), false},
		{"commit map of 8192 entries", frame(append(good, manyKeys(8192-len(good))...)), true},
		{"commit map of 8193 entries", frame(append(good, manyKeys(8193-len(good))...)), false},
		{"op map of 8193 entries", frame(with(good, "ops", opWith(manyKeys(8191)...))), false},
		{"op map of 8192 entries", frame(with(good, "ops", opWith(append([]kv{{"cid", link}}, manyKeys(8189)...)...))), true},
		{"seq above 2^62", frame(with(good, "seq", cb(nil).head(majUint, 1<<62+1))), true},
		{"seq above 2^63-1", frame(with(good, "seq", cb(nil).head(majUint, 1<<63))), false},
		{"seq negative", frame(with(good, "seq", cb(nil).head(majNegint, 4))), false},
		{"seq negative then positive", frame(append(with(good, "seq", cb(nil).head(majNegint, 4)), kv{"seq", cb(nil).head(majUint, 9)})), true},
		{"seq missing", frame(without(good, "seq")), false},
		{"header op 2^64-1 before an error body", append(mapOf(kv{"op", cb(nil).head(majUint, 1<<64-1)}), errorBody...), false},
		{"header op -2^64", append(mapOf(kv{"op", cb(nil).head(majNegint, 1<<64-1)}), errorBody...), false},
		{"header with an unknown field", append(mapOf(kv{"t", cb(nil).text("#commit")}, kv{"op", cb(nil).head(majUint, 1)}, kv{"xyz", deep}), mapOf(good...)...), true},
		{"header type twice", append(mapOf(kv{"t", cb(nil).text("#info")}, kv{"op", cb(nil).head(majUint, 1)}, kv{"t", cb(nil).text("#commit")}), mapOf(good...)...), true},
		{"repo missing", frame(without(good, "repo")), false},
		{"repo not a DID", frame(with(good, "repo", cb(nil).text("alice"))), false},
		{"repo over 1,000,000 bytes", frame(with(good, "repo", cb(nil).text(strings.Repeat("d", 1_000_001)))), false},
		{"rev missing", frame(without(good, "rev")), false},
		{"rev empty", frame(with(good, "rev", cb(nil).text(""))), false},
		{"time missing", frame(without(good, "time")), true},
		{"since null", frame(with(good, "since", cb(nil).null())), true},
		{"since twice, the later null", frame(append(good, kv{"since", cb(nil).null()})), true},
		{"tooBig true", frame(with(good, "tooBig", cb(nil).boolean(true))), true},
		{"tooBig 1", frame(with(good, "tooBig", cb(nil).head(majUint, 1))), false},
		{"rebase not a bool", frame(with(good, "rebase", cb(nil).text("no"))), false},
		{"commit null", frame(with(good, "commit", cb(nil).null())), false},
		{"commit not a link", frame(with(good, "commit", cb(nil).text("x"))), false},
		{"commit link not a CID", frame(with(good, "commit", cb(nil).rawLink(bad))), false},
		{"commit link without the 0x00 prefix", frame(with(good, "commit", cb(nil).head(majTag, 42).bytes(testCID.Bytes()))), false},
		{"prevData null", frame(with(good, "prevData", cb(nil).null())), true},
		{"prevData text", frame(with(good, "prevData", cb(nil).text("x"))), false},
		{"blobs with a link", frame(with(good, "blobs", cb(nil).head(majArray, 1).link(testCID))), true},
		{"blobs with a null", frame(with(good, "blobs", cb(nil).head(majArray, 1).null())), false},
		{"blobs of 8193", frame(with(good, "blobs", cb(nil).head(majArray, 8193))), false},
		{"blocks over 2 MiB", frame(with(good, "blocks", cb(nil).bytes(make([]byte, 2<<20+1)))), false},
		{"blocks of 2 MiB", frame(with(good, "blocks", cb(nil).bytes(make([]byte, 2<<20)))), true},
		{"blocks text", frame(with(good, "blocks", cb(nil).text("x"))), false},
		// cbor-gen reads an empty later byte string into the earlier slice:
		// the next len(earlier) bytes of the frame become the blocks.
		{"blocks twice, the later empty", frame(append(without(good, "ops"), kv{"blocks", cb{0x40, 0xff, 0xfe, 0xfd}}, kv{"ops", opsOf(opA)})), true},
		{"blocks twice, the later empty and short", frame(append(good, kv{"blocks", cb{0x40, 0xff}})), false},
		{"ops null", frame(with(good, "ops", cb(nil).null())), false},
		{"ops with a null op", frame(with(good, "ops", cb(nil).head(majArray, 2).null().rawBytes(opA.encode()))), true},
		{"ops with a text op", frame(with(good, "ops", cb(nil).head(majArray, 1).text("x"))), false},
		{"op cid not a CID, op filtered out", frame(with(good, "ops", cb(nil).head(majArray, 1).rawBytes(mapOf(kv{"cid", cb(nil).rawLink(bad)}, kv{"path", cb(nil).text(opPost.path)}, kv{"action", cb(nil).text("create")})))), false},
		{"op cid not a CID, op kept", frame(with(good, "ops", opWith(kv{"cid", cb(nil).rawLink(bad)}))), false},
		{"op cid of one byte", frame(with(good, "ops", opWith(kv{"cid", cb(nil).head(majTag, 42).bytes([]byte{0})}))), false},
		{"op cid link of 600 bytes", frame(with(good, "ops", opWith(kv{"cid", cb(nil).rawLink(make([]byte, 599))}))), false},
		{"op cid twice, the later null", frame(with(good, "ops", opWith(kv{"cid", link}, kv{"cid", cb(nil).null()}))), true},
		{"op cid twice, the later a link", frame(with(good, "ops", opWith(kv{"cid", cb(nil).null()}, kv{"cid", link}))), true},
		{"op prev a link", frame(with(good, "ops", opWith(kv{"cid", link}, kv{"prev", link}))), true},
		{"op prev null", frame(with(good, "ops", opWith(kv{"cid", link}, kv{"prev", cb(nil).null()}))), true},
		{"op prev not a link", frame(with(good, "ops", opWith(kv{"cid", link}, kv{"prev", cb(nil).text("x")}))), false},
		{"op with an unknown key", frame(with(good, "ops", opWith(kv{"cid", link}, kv{"x", deep}))), true},
		{"op path not text", frame(with(good, "ops", opWith(kv{"cid", link}, kv{"path", cb(nil).head(majUint, 1)}))), false},
		{"op path missing", frame(with(good, "ops", cb(nil).head(majArray, 1).rawBytes(mapOf(kv{"action", cb(nil).text("delete")})))), true},
		{"op bad action, projected", frame(with(good, "ops", opsOf(tOp{"upsert", opA.path, true}, opPost))), true},
		{"op bad action, not projected", frame(with(good, "ops", opsOf(opA, tOp{"upsert", opPost.path, true}))), true},
		{"op create without a cid, projected", frame(with(good, "ops", opsOf(tOp{"create", opA.path, false}))), true},
		{"op bad rkey, projected", frame(with(good, "ops", opsOf(tOp{"create", "com.atproto.space.space/a b", true}, opB))), true},
		{"op bad rkey, not projected", frame(with(good, "ops", opsOf(opA, tOp{"create", "app.bsky.feed.post/a b", true}))), true},
		{"op bad collection, not projected", frame(with(good, "ops", opsOf(opA, tOp{"create", "app..post/a", true}))), true},
		{"op path without a slash", frame(with(good, "ops", opsOf(opA, tOp{"create", "no-slash", true}))), true},
		{"op path with two slashes", frame(with(good, "ops", opsOf(tOp{"delete", "app.bsky.feed.post/a/b", false}, opA))), true},
		{"op delete with a cid", frame(with(good, "ops", opsOf(tOp{"delete", opA.path, true}))), true},
	}
}()

func TestCommitDecodeAgreesWithIndigo(t *testing.T) {
	for _, tc := range agreementCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, filter := range []Filter{spaceFilter, nil} {
				if want := indigoDecode(tc.frame, filter); (want.err == nil) != tc.accept {
					t.Fatalf("the reference says %v, the case expects accepted=%v", want.err, tc.accept)
				}
				checkAgreement(t, tc.frame, filter)
			}
		})
	}
}

// TestRealFramesAgreeWithIndigo runs the relay corpus through both.
func TestRealFramesAgreeWithIndigo(t *testing.T) {
	for _, b := range corpusFrames(t) {
		for _, filter := range []Filter{spaceFilter, nil, func(string) bool { return true }} {
			checkAgreement(t, b, filter)
		}
	}
}
