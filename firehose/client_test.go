package firehose_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
)

// recorder is a Handler that records what it is given and marks events done
// (unless hold is set, in which case the test finishes them).
type recorder struct {
	tr      *checkpoint.Tracker
	mu      sync.Mutex
	events  []*firehose.Event
	seqs    map[int64]int
	infos   []firehose.Info
	gate    chan struct{} // when non-nil, HandleEvent waits for a token
	entered chan int64
	hold    bool
}

func newRecorder(tr *checkpoint.Tracker) *recorder {
	return &recorder{tr: tr, seqs: map[int64]int{}}
}

func (r *recorder) HandleEvent(ctx context.Context, ev *firehose.Event) error {
	if r.entered != nil {
		select {
		case r.entered <- ev.Seq:
		default:
		}
	}
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return nil
		}
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.seqs[ev.Seq]++
	r.mu.Unlock()
	if !r.hold {
		r.tr.Done(ev.Seq)
	}
	return nil
}

func (r *recorder) HandleInfo(_ context.Context, info firehose.Info) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.infos = append(r.infos, info)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func (r *recorder) snapshot() []*firehose.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*firehose.Event(nil), r.events...)
}

type runner struct {
	client  *firehose.Client
	metrics *firehose.Metrics
	source  *firehose.Source
	reg     *prometheus.Registry
	done    chan error
	cancel  context.CancelFunc
}

func start(t *testing.T, cfg firehose.Config) *runner {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Metrics = firehose.NewMetrics(reg)
	if cfg.Source == nil {
		cfg.Source = firehose.NewSource(reg)
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin, cfg.BackoffMax = 5*time.Millisecond, 50*time.Millisecond
	}
	c, err := firehose.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &runner{client: c, metrics: cfg.Metrics, source: cfg.Source, reg: reg, done: make(chan error, 1), cancel: cancel}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("client did not stop")
		}
	})
	return r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func spaceWrite(action, rkey string, bubble bool) fakepds.Write {
	return fakepds.Write{Action: action, Collection: "com.atproto.space.space", RKey: rkey,
		Value: map[string]any{"$type": "com.atproto.space.space", "displayName": "S " + rkey, "bubble": bubble}}
}

func postWrite(rkey string) fakepds.Write {
	return fakepds.Write{Action: "create", Collection: "app.bsky.feed.post", RKey: rkey,
		Value: map[string]any{"$type": "app.bsky.feed.post", "text": "hello " + rkey, "createdAt": "2026-01-01T00:00:00Z"}}
}

func onlySpaces(path string) bool { return len(path) > 15 && path[:15] == "com.atproto.spa" }

func TestDecodesAccountsAndFilteredOps(t *testing.T) {
	pds := fakepds.New(t)
	alice, err := pds.CreateAccount("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pds.Commit(alice.DID(), spaceWrite("create", "root", false), postWrite("p1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pds.Commit(alice.DID(), spaceWrite("update", "root", true)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pds.Commit(alice.DID(), fakepds.Write{Action: "delete", Collection: "com.atproto.space.space", RKey: "root"}); err != nil {
		t.Fatal(err)
	}
	tr := checkpoint.NewTracker(0, 0, nil)
	rec := newRecorder(tr)
	start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec, Filter: onlySpaces})
	waitFor(t, "7 events", func() bool { return rec.count() == 7 })
	evs := rec.snapshot()
	kinds := []firehose.Kind{firehose.KindIdentity, firehose.KindAccount, firehose.KindCommit, firehose.KindSync,
		firehose.KindCommit, firehose.KindCommit, firehose.KindCommit}
	for i, ev := range evs {
		if ev.Kind != kinds[i] || ev.Seq != int64(i+1) || ev.DID != alice.DID() {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	if !evs[1].Active || evs[3].SyncData == cid.Undef {
		t.Fatalf("account %+v / sync data %v", evs[1], evs[3].SyncData)
	}
	create := evs[4]
	if create.OpCount != 2 || len(create.Ops) != 1 {
		t.Fatalf("create: %d ops, %d kept", create.OpCount, len(create.Ops))
	}
	op := create.Ops[0]
	if op.Action != firehose.ActionCreate || op.Path() != "com.atproto.space.space/root" || op.Err != nil ||
		op.Record["displayName"] != "S root" || op.Record["bubble"] != false {
		t.Fatalf("create op: %+v", op)
	}
	if evs[5].Ops[0].Action != firehose.ActionUpdate || evs[5].Ops[0].Record["bubble"] != true || evs[5].Since != create.Rev {
		t.Fatalf("update: %+v since %q", evs[5].Ops[0], evs[5].Since)
	}
	if evs[6].Ops[0].Action != firehose.ActionDelete || evs[6].Ops[0].Record != nil {
		t.Fatalf("delete: %+v", evs[6].Ops[0])
	}
	if tr.Watermark() != 7 {
		t.Fatalf("watermark %d", tr.Watermark())
	}
}

func TestResumeFromWatermarkAfterDrop(t *testing.T) {
	pds := fakepds.New(t)
	a, _ := pds.CreateAccount("alice")
	tr := checkpoint.NewTracker(0, 0, nil)
	rec := newRecorder(tr)
	rec.hold = true // the test decides what is done
	r := start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec})
	for i := range 10 {
		if _, _, err := pds.Commit(a.DID(), postWrite(rkey(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "14 events", func() bool { return rec.count() == 14 })
	for s := int64(1); s <= 8; s++ {
		tr.Done(s)
	}
	pds.Drop()
	if err := pds.WaitConnections(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 15; i++ {
		if _, _, err := pds.Commit(a.DID(), postWrite(rkey(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "19 events", func() bool { return rec.count() == 19 })
	if got := pds.Cursors(); got[1] != "8" {
		t.Fatalf("reconnected with cursor %q, want the watermark 8 (cursors %v)", got[1], got)
	}
	rec.mu.Lock()
	for s := int64(1); s <= 19; s++ {
		if rec.seqs[s] != 1 {
			t.Errorf("seq %d delivered %d times", s, rec.seqs[s])
		}
	}
	rec.mu.Unlock()
	// 9..14 were replayed by the PDS and dropped as duplicates.
	if got := metrictest.Value(t, r.reg, "spaces_authz_duplicate_events_total", "stage", "stream"); got != 6 {
		t.Fatalf("duplicates counted %v, want 6", got)
	}
}

func rkey(i int) string { return "k" + string(rune('a'+i%26)) + string(rune('a'+i/26)) }

func TestFutureCursorIsFatal(t *testing.T) {
	pds := fakepds.New(t)
	_, _ = pds.CreateAccount("alice")
	tr := checkpoint.NewTracker(1000, 0, nil)
	r := start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: newRecorder(tr)})
	select {
	case err := <-r.done:
		if !errors.Is(err, firehose.ErrFutureCursor) {
			t.Fatalf("Run = %v, want ErrFutureCursor", err)
		}
		r.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop on FutureCursor")
	}
	if pds.Dials() != 1 {
		t.Fatalf("%d dials: FutureCursor must not be retried", pds.Dials())
	}
}

func TestOutdatedCursorIsSurfaced(t *testing.T) {
	pds := fakepds.New(t)
	a, _ := pds.CreateAccount("alice")
	for i := range 6 {
		_, _, _ = pds.Commit(a.DID(), postWrite(rkey(i)))
	}
	pds.Trim(8) // seqs 1..7 are gone
	tr := checkpoint.NewTracker(2, 0, nil)
	rec := newRecorder(tr)
	start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec})
	waitFor(t, "replay from the oldest kept event", func() bool { return rec.count() == 3 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.infos) != 1 || rec.infos[0].Name != firehose.InfoOutdatedCursor {
		t.Fatalf("infos %+v", rec.infos)
	}
	if rec.events[0].Seq != 8 {
		t.Fatalf("first replayed seq %d", rec.events[0].Seq)
	}
}

func TestConnectionCutMidFrame(t *testing.T) {
	pds := fakepds.New(t)
	a, _ := pds.CreateAccount("alice")
	tr := checkpoint.NewTracker(0, 0, nil)
	rec := newRecorder(tr)
	start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec})
	waitFor(t, "account events", func() bool { return rec.count() == 4 })
	pds.CutNext()
	for i := range 5 {
		_, _, _ = pds.Commit(a.DID(), postWrite(rkey(i)))
	}
	waitFor(t, "all events after the cut", func() bool { return rec.count() == 9 })
	if pds.Dials() < 2 {
		t.Fatalf("no reconnect after the cut (%d dials)", pds.Dials())
	}
	if tr.Watermark() != 9 {
		t.Fatalf("watermark %d", tr.Watermark())
	}
}

func TestBadFramesAreCountedAndSkipped(t *testing.T) {
	pds := fakepds.New(t)
	a, _ := pds.CreateAccount("alice")
	tr := checkpoint.NewTracker(0, 0, nil)
	rec := newRecorder(tr)
	r := start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec, MaxFrameBytes: 64 << 10})
	waitFor(t, "account events", func() bool { return rec.count() == 4 })

	pds.Inject([]byte{0xff, 0x00, 0x13})                                                       // not CBOR
	pds.Inject(mustFrame(t, "#bogus", &fakepds.Write{}))                                       // unknown type (body irrelevant)
	pds.Inject(bytes.Repeat([]byte{0xa2}, 200<<10))                                            // oversized
	_, _ = pds.InjectSequenced(func(int64) ([]byte, error) { return []byte{0xa2, 0x61}, nil }) // truncated
	// A commit whose path is not collection/rkey: delivered without the
	// op, Malformed (TestMalformedOpsAreDeliveredNotSkipped has more).
	_, _ = pds.InjectSequenced(func(seq int64) ([]byte, error) {
		c, err := a.Apply(postWrite("zz"))
		if err != nil {
			return nil, err
		}
		c.Ops[0].Path = "no-slash"
		return fakepds.CommitFrame(c, seq, "2026-01-01T00:00:00Z")
	})
	// Per-op problems: a CID whose block is absent, a block that doesn't
	// hash to its CID, and bytes that are not a record.
	_, _ = pds.InjectSequenced(func(seq int64) ([]byte, error) { return badOpsFrame(t, a, seq) })
	_, _, _ = pds.Commit(a.DID(), spaceWrite("create", "after", false))

	waitFor(t, "events after the garbage", func() bool { return rec.count() == 7 })
	evs := rec.snapshot()
	if noSlash := evs[4]; noSlash.Malformed != firehose.ReasonBadPath || len(noSlash.Ops) != 0 || noSlash.OpCount != 1 {
		t.Fatalf("commit with a bad path: Malformed %q, %d of %d ops kept", noSlash.Malformed, len(noSlash.Ops), noSlash.OpCount)
	}
	bad := evs[5]
	if len(bad.Ops) != 3 {
		t.Fatalf("bad-ops commit kept %d ops", len(bad.Ops))
	}
	wantReasons := []string{firehose.ReasonMissingBlock, firehose.ReasonCIDMismatch, firehose.ReasonMalformedRec}
	for i, op := range bad.Ops {
		if op.Err == nil || op.Err.Reason != wantReasons[i] {
			t.Fatalf("op %d: err %v, want %s", i, op.Err, wantReasons[i])
		}
	}
	if evs[6].Ops[0].Path() != "com.atproto.space.space/after" {
		t.Fatalf("stream did not go on: %+v", evs[6])
	}
	for reason, want := range map[string]float64{firehose.ReasonMalformedFrame: 2, firehose.ReasonUnknownType: 1,
		firehose.ReasonOversized: 1} {
		got := metrictest.Value(t, r.reg, "spaces_authz_firehose_bad_frames_total", "reason", reason)
		if got != want {
			t.Errorf("bad frames %s = %v, want %v", reason, got, want)
		}
	}
	if got := metrictest.Value(t, r.reg, "spaces_authz_firehose_bad_frames_total"); got != 4 {
		t.Errorf("%v bad frames in all, want 4", got)
	}
	if got := metrictest.Value(t, r.reg, "spaces_authz_firehose_bad_ops_total", "reason", firehose.ReasonBadPath); got != 1 {
		t.Errorf("bad ops bad_path = %v, want 1", got)
	}
	if pds.Dials() != 1 {
		t.Fatalf("bad frames caused %d dials", pds.Dials())
	}
	if tr.Watermark() != pds.Head() {
		t.Fatalf("watermark %d, head %d", tr.Watermark(), pds.Head())
	}
}

// craftedCommit sends a commit of a's writes as a PDS would, after edit
// has changed what the frame says (paths, actions, the DID).
func craftedCommit(t *testing.T, pds *fakepds.Server, a *fakepds.Repo, edit func(c *fakepds.Commit), writes ...fakepds.Write) {
	t.Helper()
	if _, err := pds.InjectSequenced(func(seq int64) ([]byte, error) {
		c, err := a.Apply(writes...)
		if err != nil {
			return nil, err
		}
		edit(c)
		return fakepds.CommitFrame(c, seq, "2026-01-01T00:00:00Z")
	}); err != nil {
		t.Fatal(err)
	}
}

// A commit with an op that can't be read is delivered, without that op;
// Malformed says so when the op may touch a projected collection (the
// consumer then reads the repo), and stays empty when its collection
// clearly is not projected. Only commit-level problems skip the frame.
func TestMalformedOpsAreDeliveredNotSkipped(t *testing.T) {
	pds := fakepds.New(t)
	a, _ := pds.CreateAccount("alice")
	tr := checkpoint.NewTracker(0, 0, nil)
	rec := newRecorder(tr)
	r := start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec, Filter: onlySpaces})
	waitFor(t, "account events", func() bool { return rec.count() == 4 })

	setPath := func(i int, p string) func(*fakepds.Commit) { return func(c *fakepds.Commit) { c.Ops[i].Path = p } }
	// 5: a projected op with a bad record key, between two good ops.
	craftedCommit(t, pds, a, setPath(1, "com.atproto.space.space/bad key"),
		spaceWrite("create", "s1", false), spaceWrite("create", "s2", false), spaceWrite("create", "s3", true))
	// 6: a projected op with a bad action.
	craftedCommit(t, pds, a, func(c *fakepds.Commit) { c.Ops[0].Action = "upsert" },
		spaceWrite("create", "s4", false), postWrite("p0"))
	// 7: a path that can't be split: it may name any collection.
	craftedCommit(t, pds, a, setPath(1, "no-slash"), spaceWrite("create", "s5", false), postWrite("p1"))
	// 8 and 9: a bad record key and a bad action on a collection that is
	// not projected.
	craftedCommit(t, pds, a, setPath(1, "app.bsky.feed.post/bad key"), spaceWrite("create", "s6", false), postWrite("p2"))
	craftedCommit(t, pds, a, func(c *fakepds.Commit) { c.Ops[0].Action = "upsert" }, postWrite("p3"), spaceWrite("create", "s7", false))
	// 10: an invalid DID still skips the whole frame.
	craftedCommit(t, pds, a, func(c *fakepds.Commit) { c.DID = "did:bogus" }, spaceWrite("create", "s8", false))
	// 11: the stream goes on.
	if _, _, err := pds.Commit(a.DID(), spaceWrite("create", "after", false)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the last commit", func() bool { return tr.Watermark() == pds.Head() })

	bySeq := map[int64]*firehose.Event{}
	for _, ev := range rec.snapshot() {
		bySeq[ev.Seq] = ev
	}
	for _, tc := range []struct {
		seq       int64
		malformed string
		kept      []string
		opCount   int
	}{
		{5, firehose.ReasonBadPath, []string{"s1", "s3"}, 3},
		{6, firehose.ReasonBadAction, nil, 2},
		{7, firehose.ReasonBadPath, []string{"s5"}, 2},
		{8, "", []string{"s6"}, 2},
		{9, "", []string{"s7"}, 2},
		{11, "", []string{"after"}, 1},
	} {
		ev := bySeq[tc.seq]
		if ev == nil {
			t.Errorf("seq %d was not delivered", tc.seq)
			continue
		}
		var kept []string
		for _, op := range ev.Ops {
			if op.Collection != "com.atproto.space.space" || op.Err != nil || op.Record["displayName"] != "S "+op.RKey {
				t.Errorf("seq %d: op %s: %+v", tc.seq, op.Path(), op)
			}
			kept = append(kept, op.RKey)
		}
		if ev.Malformed != tc.malformed || strings.Join(kept, ",") != strings.Join(tc.kept, ",") || ev.OpCount != tc.opCount {
			t.Errorf("seq %d: Malformed %q, ops %v of %d; want %q, %v of %d", tc.seq, ev.Malformed, kept, ev.OpCount,
				tc.malformed, tc.kept, tc.opCount)
		}
	}
	if ev := bySeq[10]; ev != nil {
		t.Errorf("the commit with an invalid DID was delivered: %+v", ev)
	}
	for reason, want := range map[string]float64{firehose.ReasonBadPath: 3, firehose.ReasonBadAction: 2} {
		if got := metrictest.Value(t, r.reg, "spaces_authz_firehose_bad_ops_total", "reason", reason); got != want {
			t.Errorf("bad ops %s = %v, want %v", reason, got, want)
		}
	}
	if got := metrictest.Value(t, r.reg, "spaces_authz_firehose_bad_frames_total"); got != 1 {
		t.Errorf("%v bad frames, want 1 (the invalid DID)", got)
	}
	if got := metrictest.Value(t, r.reg, "spaces_authz_firehose_bad_frames_total", "reason", firehose.ReasonInvalidDID); got != 1 {
		t.Errorf("bad frames invalid_did = %v, want 1", got)
	}
}

// Without a filter (raw mode) every op is kept, so any unreadable op may
// matter: Malformed is set whatever its collection.
func TestMalformedOpWithoutFilter(t *testing.T) {
	pds := fakepds.New(t)
	a, _ := pds.CreateAccount("alice")
	tr := checkpoint.NewTracker(0, 0, nil)
	rec := newRecorder(tr)
	start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec})
	waitFor(t, "account events", func() bool { return rec.count() == 4 })
	craftedCommit(t, pds, a, func(c *fakepds.Commit) { c.Ops[1].Path = "app.bsky.feed.post/bad key" },
		postWrite("p0"), postWrite("p1"))
	waitFor(t, "the commit", func() bool { return rec.count() == 5 })
	ev := rec.snapshot()[4]
	if ev.Malformed != firehose.ReasonBadPath || len(ev.Ops) != 1 || ev.Ops[0].RKey != "p0" || ev.Ops[0].Record == nil {
		t.Fatalf("Malformed %q, ops %+v", ev.Malformed, ev.Ops)
	}
}

func mustFrame(t *testing.T, typ string, _ any) []byte {
	t.Helper()
	f, err := fakepds.EncodeFrame(typ, &struct{ fakepds.Empty }{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// badOpsFrame builds a #commit with three creates whose records can't be
// used: one block missing, one block under the wrong CID, one not CBOR.
func badOpsFrame(t *testing.T, a *fakepds.Repo, seq int64) ([]byte, error) {
	t.Helper()
	c, err := a.Apply(spaceWrite("create", "miss", false), spaceWrite("create", "swap", false),
		fakepds.Write{Action: "create", Collection: "com.atproto.space.space", RKey: "junk", RawValue: []byte{0xff, 0xfe}})
	if err != nil {
		return nil, err
	}
	otherData, otherCID, _ := fakepds.EncodeRecord(map[string]any{"x": "never in the CAR"})
	_ = otherData
	c.Ops[0].CID = &otherCID
	// Rewrite the CAR: the "swap" op's CID now names bytes of another record.
	swapCID := *c.Ops[1].CID
	var buf bytes.Buffer
	_ = car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{c.CID}, Version: 1}, &buf)
	cr, _ := car.NewCarReader(bytes.NewReader(c.Blocks))
	for {
		blk, err := cr.Next()
		if err != nil {
			break
		}
		data := blk.RawData()
		if blk.Cid().Equals(swapCID) {
			data = []byte{0xa1, 0x61, 0x78, 0x61, 0x79} // {"x":"y"}: valid CBOR, wrong hash
		}
		_ = carutil.LdWrite(&buf, blk.Cid().Bytes(), data)
	}
	c.Blocks = buf.Bytes()
	return fakepds.CommitFrame(c, seq, "2026-01-01T00:00:00Z")
}

func TestSlowConsumerBlocksReader(t *testing.T) {
	pds := fakepds.New(t)
	var dids []string
	for i := range 8 {
		a, err := pds.CreateAccount("slow" + rkey(i))
		if err != nil {
			t.Fatal(err)
		}
		dids = append(dids, a.DID())
	}
	for i := range 400 {
		if _, _, err := pds.Commit(dids[i%len(dids)], postWrite(rkey(i))); err != nil {
			t.Fatal(err)
		}
	}
	total := int(pds.Head())
	const maxInFlight, workers, depth = 48, 2, 4
	tr := checkpoint.NewTracker(0, maxInFlight, nil)
	rec := newRecorder(tr)
	rec.gate = make(chan struct{})
	rec.hold = true
	r := start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec, Workers: workers, QueueDepth: depth})
	headSeq := func() float64 { return metrictest.Value(t, r.reg, "spaces_authz_firehose_head_seq") }

	// 1. The handler is stuck: the lanes fill and the reader stops; it has
	// read at most the lanes' capacity, a frame in each handler and one
	// frame it is trying to hand over.
	time.Sleep(300 * time.Millisecond)
	if read := headSeq(); read > workers*depth+workers+1 || read < depth {
		t.Fatalf("stuck handler: reader read up to seq %v (lanes hold %d)", read, workers*depth)
	}
	// 2. The handler runs but nothing is done (SpiceDB stalled, say): the
	// tracker admits exactly maxInFlight events, then the reader blocks
	// with the next frame read (the head it has seen) and not admitted.
	close(rec.gate)
	waitFor(t, "tracker full", func() bool { return rec.count() == maxInFlight })
	time.Sleep(200 * time.Millisecond)
	if read := headSeq(); read != maxInFlight+1 || tr.InFlight() != maxInFlight {
		t.Fatalf("tracker bound: read up to seq %v, %d in flight, want %d", read, tr.InFlight(), maxInFlight)
	}
	// 3. Finishing events lets the stream go on to the end.
	go func() {
		next := 0
		for next < total {
			evs := rec.snapshot()
			for _, ev := range evs[next:] {
				tr.Done(ev.Seq)
			}
			next = len(evs)
			time.Sleep(time.Millisecond)
		}
	}()
	waitFor(t, "all events once unblocked", func() bool { return tr.Watermark() == int64(total) })
	if pds.Dials() != 1 {
		t.Fatalf("%d dials", pds.Dials())
	}
}

func TestManyDIDsInterleaved(t *testing.T) {
	pds := fakepds.New(t)
	var repos []*fakepds.Repo
	for i := range 12 {
		r, err := pds.CreateAccount(rkey(i) + "-user")
		if err != nil {
			t.Fatal(err)
		}
		repos = append(repos, r)
	}
	for i := range 360 {
		r := repos[rand.IntN(len(repos))]
		if _, _, err := pds.Commit(r.DID(), postWrite("p"+rkey(i))); err != nil {
			t.Fatal(err)
		}
	}
	tr := checkpoint.NewTracker(0, 64, nil)
	rec := newRecorder(tr)
	rec.hold = true
	start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec, Workers: 4, QueueDepth: 8})

	// Finish events in random order from other goroutines and check the
	// watermark never claims an unfinished event.
	var mu sync.Mutex
	done := map[int64]bool{}
	var finished int
	head := pds.Head()
	for finished < int(head) {
		evs := rec.snapshot()
		var pending []int64
		mu.Lock()
		for _, ev := range evs {
			if !done[ev.Seq] {
				pending = append(pending, ev.Seq)
			}
		}
		mu.Unlock()
		rand.Shuffle(len(pending), func(i, j int) { pending[i], pending[j] = pending[j], pending[i] })
		var wg sync.WaitGroup
		for _, s := range pending {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
				mu.Lock()
				done[s] = true
				mu.Unlock()
				tr.Done(s)
			}()
		}
		wg.Wait()
		mu.Lock()
		finished = len(done)
		wm := tr.Watermark()
		for s := int64(1); s <= wm; s++ {
			if !done[s] {
				t.Fatalf("watermark %d passes unfinished seq %d", wm, s)
			}
		}
		mu.Unlock()
		if len(pending) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if tr.Watermark() != head {
		t.Fatalf("watermark %d, head %d", tr.Watermark(), head)
	}
	// Per-DID order: seqs of each DID arrive increasing.
	last := map[string]int64{}
	for _, ev := range rec.snapshot() {
		if ev.Seq <= last[ev.DID] {
			t.Fatalf("%s: seq %d after %d", ev.DID, ev.Seq, last[ev.DID])
		}
		last[ev.DID] = ev.Seq
	}
}

func TestStreamURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://pds.example":   "ws://pds.example/xrpc/com.atproto.sync.subscribeRepos?cursor=5",
		"https://pds.example/": "wss://pds.example/xrpc/com.atproto.sync.subscribeRepos?cursor=5",
		"wss://pds.example/xrpc/com.atproto.sync.subscribeRepos": "wss://pds.example/xrpc/com.atproto.sync.subscribeRepos?cursor=5",
	} {
		got, err := firehose.StreamURL(in, 5)
		if err != nil || got != want {
			t.Errorf("StreamURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, _ := firehose.StreamURL("ws://h", checkpoint.None); got != "ws://h/xrpc/com.atproto.sync.subscribeRepos" {
		t.Errorf("live URL %q", got)
	}
	for _, bad := range []string{"ftp://x", "x", "http://"} {
		if _, err := firehose.StreamURL(bad, 0); err == nil {
			t.Errorf("StreamURL(%q) accepted", bad)
		}
	}
}
