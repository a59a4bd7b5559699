package projector

// FAST STATE-MACHINE TESTS of the engine's decisions, against in-memory
// stand-ins for SpiceDB (memView) and the PDS (memPDS). They run in
// milliseconds and drive the engine event by event. They do NOT replace the
// real-SpiceDB projection tests (projection_test.go, rebuild_test.go, and
// the crash and e2e tests), which DESIGN §9 requires for anything that
// claims to test what SpiceDB stores or answers.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/view"
)

// memView holds relationships in a map and applies writes the way
// WriteRelationships does (TOUCH adds, DELETE removes, all at once).
type memView struct {
	mu     sync.Mutex
	rels   map[view.Tuple]bool
	writes int
	// revUpdates counts the updates of rev tuples written.
	revUpdates int
}

// errGuard stands in for spice.ErrOwnership.
var errGuard = errors.New("memView: a guard does not hold")

func (m *memView) Write(_ context.Context, updates, progress []view.Update, guards []view.Guard) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range guards {
		held := m.rels[g.Tuple]
		if g.Absent {
			held = true
			for t := range m.rels {
				if t.ResourceType == g.Tuple.ResourceType && t.ResourceID == g.Tuple.ResourceID && t.Relation == g.Tuple.Relation {
					held = false
				}
			}
		}
		if !held {
			return "", fmt.Errorf("%w: %s", errGuard, g)
		}
	}
	if len(updates)+len(progress) == 0 {
		return fmt.Sprint(m.writes), nil
	}
	for _, u := range slices.Concat(updates, progress) {
		if u.Tuple.Relation == view.RelRev {
			m.revUpdates++
		}
		if u.Op == view.OpTouch {
			m.rels[u.Tuple] = true
		} else {
			delete(m.rels, u.Tuple)
		}
	}
	m.writes++
	return fmt.Sprint(m.writes), nil
}

func (m *memView) DryRun(context.Context, []view.Update) error { return nil }
func (m *memView) Refused(error) bool                          { return false }

// matching lists the relationships for which keep holds, sorted.
func (m *memView) matching(keep func(view.Tuple) bool) []view.Tuple {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []view.Tuple
	for t := range m.rels {
		if keep(t) {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func (m *memView) LoadRepos(context.Context, string) ([]view.RepoState, error) {
	var rs view.RepoStates
	for _, t := range m.matching(func(t view.Tuple) bool { return t.ResourceType == view.TypeRepo }) {
		if err := rs.Add(t); err != nil {
			return nil, err
		}
	}
	return rs.List(), nil
}

func (m *memView) LoadLineage(_ context.Context, did, _ string) ([]view.LineageEntry, error) {
	var out []view.LineageEntry
	for _, t := range m.matching(func(t view.Tuple) bool {
		return t.ResourceType == view.TypeLineage && strings.HasPrefix(t.ResourceID, view.DIDPrefix(did))
	}) {
		en, err := view.ParseLineage(did, t)
		if err != nil {
			return nil, err
		}
		out = append(out, en)
	}
	return out, nil
}

func (m *memView) LoadRepo(_ context.Context, did, _ string) (view.RepoState, error) {
	var rs view.RepoStates
	for _, t := range m.matching(func(t view.Tuple) bool {
		return t.ResourceType == view.TypeRepo && t.ResourceID == view.RepoID(did)
	}) {
		if err := rs.Add(t); err != nil {
			return view.RepoState{}, err
		}
	}
	if l := rs.List(); len(l) > 0 {
		return l[0], nil
	}
	return view.RepoState{DID: did}, nil
}

func (m *memView) LoadEpoch(_ context.Context, source, _ string) (int64, error) {
	epoch := checkpoint.None
	for _, t := range m.matching(func(t view.Tuple) bool {
		return t.ResourceType == view.TypeProjector && t.ResourceID == source && t.Relation == view.RelEpoch
	}) {
		var n int64
		if _, err := fmt.Sscan(t.SubjectID, &n); err != nil {
			return 0, err
		}
		epoch = max(epoch, n)
	}
	return epoch, nil
}

func (m *memView) LoadData(_ context.Context, did, _ string) ([]view.Tuple, error) {
	return m.matching(func(t view.Tuple) bool {
		return (t.ResourceType == view.TypeSpace || t.ResourceType == view.TypeGroup) &&
			strings.HasPrefix(t.ResourceID, view.DIDPrefix(did))
	}), nil
}

func (m *memView) progress(t *testing.T) checkpoint.State {
	st := checkpoint.Empty()
	for _, tu := range m.matching(func(t view.Tuple) bool { return t.ResourceType == view.TypeProjector }) {
		if _, err := st.Decode(tu); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// memRepo is one account of memPDS.
type memRepo struct {
	rev     string
	status  string // "" active, else the account status
	records map[string]map[string]any
}

// memPDS is a Fetcher over repos held in memory.
type memPDS struct {
	mu    sync.Mutex
	repos map[string]*memRepo
	// fail, when set, answers getRepo for a DID with an error.
	fail map[string]error
}

func (p *memPDS) GetRepo(_ context.Context, did string, keep func(string) bool) (*firehose.Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.fail[did]; err != nil {
		return nil, err
	}
	r := p.repos[did]
	switch {
	case r == nil || r.status == statusDeleted:
		return nil, firehose.ErrRepoNotFound
	case r.status != "":
		return nil, firehose.ErrRepoInactive
	}
	snap := &firehose.Snapshot{DID: did, Rev: r.rev}
	for path, v := range r.records {
		coll, rkey := view.SplitPath(path)
		if keep == nil || keep(coll) {
			snap.Records = append(snap.Records, firehose.Record{Collection: coll, RKey: rkey, Value: v})
		}
	}
	sort.Slice(snap.Records, func(i, j int) bool { return snap.Records[i].Path() < snap.Records[j].Path() })
	return snap, nil
}

func (p *memPDS) ListAllRepos(_ context.Context, fn func(firehose.RepoInfo) error) error {
	p.mu.Lock()
	var dids []string
	for did, r := range p.repos {
		if r.status != statusDeleted {
			dids = append(dids, did)
		}
	}
	p.mu.Unlock()
	sort.Strings(dids)
	for _, did := range dids {
		if err := fn(firehose.RepoInfo{DID: did}); err != nil {
			return err
		}
	}
	return nil
}

// memHarness runs an engine over memView and memPDS and plays events into
// it as the firehose client would.
type memHarness struct {
	t       *testing.T
	ctx     context.Context
	view    *memView
	pds     *memPDS
	reg     *prometheus.Registry
	prog    *checkpoint.Progress
	engine  *Engine
	seq     int64
	clock   int64
	stopped chan error
	stop    func()
	pub     *memPublisher // nil: no fan-out
	// flushEvery and revFlushAfter tune the engine (0: 5 ms and the
	// default).
	flushEvery, revFlushAfter time.Duration
	cacheRecords              int // 0: the default
}

// memPublisher records what the engine fans out, accepting it at once.
type memPublisher struct {
	mu      sync.Mutex
	changes []view.Change
}

func (p *memPublisher) Publish(_ context.Context, changes []view.Change, _ string, done func()) error {
	p.mu.Lock()
	p.changes = append(p.changes, changes...)
	p.mu.Unlock()
	done()
	return nil
}

// published lists the changes published so far for which keep holds.
func (p *memPublisher) published(keep func(view.Change) bool) []view.Change {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []view.Change
	for _, c := range p.changes {
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}

func newMemHarness(t *testing.T, stored checkpoint.State) *memHarness {
	t.Helper()
	h := &memHarness{t: t, view: &memView{rels: map[view.Tuple]bool{}}, pds: &memPDS{repos: map[string]*memRepo{}},
		reg: prometheus.NewRegistry(), seq: max(stored.Cursor, stored.Rewind, 0), clock: 1_700_000_000_000_000}
	h.start(stored)
	return h
}

// start (re)starts the engine from stored progress, as a new process would.
func (h *memHarness) start(stored checkpoint.State) {
	h.t.Helper()
	if h.stop != nil {
		h.stop()
	}
	var err error
	if h.prog, err = checkpoint.New(checkpoint.Config{Source: "default", Stored: stored}); err != nil {
		h.t.Fatal(err)
	}
	h.reg = prometheus.NewRegistry()
	cfg := Config{Rules: view.DefaultRules(), Store: h.view, Writer: h.view, Fetcher: h.pds,
		Progress: h.prog, FlushEvery: cmp.Or(h.flushEvery, 5*time.Millisecond), RevFlushAfter: h.revFlushAfter,
		CacheRecords: h.cacheRecords, Metrics: NewMetrics(h.reg),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if h.pub != nil {
		cfg.Publisher = h.pub
	}
	h.engine, err = New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.ctx = ctx
	if err := h.engine.Load(ctx); err != nil {
		h.t.Fatal(err)
	}
	stopped := make(chan error, 1)
	h.stopped = stopped
	go func() { stopped <- h.engine.Run(ctx) }()
	var once sync.Once
	h.stop = func() { once.Do(func() { cancel(); <-stopped }) }
	h.t.Cleanup(h.stop)
}

func (h *memHarness) repo(did string) *memRepo {
	r := h.pds.repos[did]
	if r == nil {
		r = &memRepo{records: map[string]map[string]any{}}
		h.pds.repos[did] = r
	}
	return r
}

// write changes a repo on the PDS (value nil deletes path) and returns the
// commit event, without sending it.
func (h *memHarness) write(did string, ops map[string]map[string]any) *firehose.Event {
	h.pds.mu.Lock()
	defer h.pds.mu.Unlock()
	r := h.repo(did)
	h.clock++
	rev := syntax.NewTID(h.clock, 0).String()
	h.seq++
	ev := &firehose.Event{Seq: h.seq, Kind: firehose.KindCommit, DID: did, Rev: rev, Since: r.rev,
		Time: time.Now().UTC().Format(time.RFC3339Nano)}
	paths := make([]string, 0, len(ops))
	for p := range ops {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		coll, rkey := view.SplitPath(p)
		op := firehose.Op{Collection: coll, RKey: rkey, Record: ops[p]}
		_, had := r.records[p]
		switch {
		case ops[p] == nil:
			op.Action = firehose.ActionDelete
			delete(r.records, p)
		case had:
			op.Action = firehose.ActionUpdate
			r.records[p] = ops[p]
		default:
			op.Action = firehose.ActionCreate
			r.records[p] = ops[p]
		}
		ev.Ops = append(ev.Ops, op)
	}
	r.rev = rev
	return ev
}

// send hands an event to the engine the way the firehose client does.
func (h *memHarness) send(ev *firehose.Event) {
	h.t.Helper()
	if err := h.prog.Tracker().Begin(h.ctx, ev.Seq); err != nil {
		h.t.Fatal(err)
	}
	if err := h.engine.HandleEvent(h.ctx, ev); err != nil {
		h.t.Fatal(err)
	}
}

func (h *memHarness) commit(did string, ops map[string]map[string]any) { h.send(h.write(did, ops)) }

func (h *memHarness) account(did string, status string) {
	h.pds.mu.Lock()
	h.repo(did).status = status
	h.pds.mu.Unlock()
	h.seq++
	h.send(&firehose.Event{Seq: h.seq, Kind: firehose.KindAccount, DID: did, Active: status == "", Status: status})
}

// restart stops the engine, lets edit change the stored relationships
// (under the view's lock; nil: none), and starts it again from the stored
// progress, as a new process would.
func (h *memHarness) restart(edit func(rels map[view.Tuple]bool)) {
	h.t.Helper()
	h.stop()
	if edit != nil {
		h.view.mu.Lock()
		edit(h.view.rels)
		h.view.mu.Unlock()
	}
	h.start(h.view.progress(h.t))
}

// handOver gives did to another source in rels, as that source's claim
// would: the source tuple names owner, and owner's epoch 0 is stored.
func handOver(rels map[view.Tuple]bool, did, owner string) {
	delete(rels, view.SourceTuple(did, "default"))
	rels[view.SourceTuple(did, owner)] = true
	rels[view.EpochTuple(owner, 0)] = true
}

// withdrawData deletes did's data relationships from rels, as its owner's
// withdrawal (a deactivation, a takedown) does.
func withdrawData(rels map[view.Tuple]bool, did string) {
	for tu := range rels {
		if (tu.ResourceType == view.TypeSpace || tu.ResourceType == view.TypeGroup) &&
			strings.HasPrefix(tu.ResourceID, view.DIDPrefix(did)) {
			delete(rels, tu)
		}
	}
}

// aliceOwnedBy starts a harness whose alice (a space with a viewer grant
// to bob) is owned by another source, as if owner's projector had written
// her; edit (nil: none) changes the stored state further before the start.
func aliceOwnedBy(t *testing.T, owner string, edit func(rels map[view.Tuple]bool)) *memHarness {
	t.Helper()
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false),
		relCol + "g1": grant(memAlice, "root", "viewer", memBob)})
	h.assertView("alice projected")
	h.restart(func(rels map[view.Tuple]bool) {
		handOver(rels, memAlice, owner)
		if edit != nil {
			edit(rels)
		}
	})
	return h
}

// rebuild runs a full rebuild and waits (up to 5 s) until it is done.
func (h *memHarness) rebuild(reason string) {
	h.t.Helper()
	done, err := h.engine.Rebuild(h.ctx, reason, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		h.t.Fatal("rebuild did not finish")
	}
}

// failGetRepo makes the PDS's getRepo of did fail with err (nil: answer
// again).
func (h *memHarness) failGetRepo(did string, err error) {
	h.pds.mu.Lock()
	defer h.pds.mu.Unlock()
	if err == nil {
		delete(h.pds.fail, did)
		return
	}
	if h.pds.fail == nil {
		h.pds.fail = map[string]error{}
	}
	h.pds.fail[did] = err
}

// settle waits until every event sent is applied and the cursor stored.
func (h *memHarness) settle() {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.prog.Tracker().Watermark() < h.seq || h.prog.Stored().Cursor < h.seq {
		select {
		case err := <-h.stopped:
			h.t.Fatalf("engine stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("not settled: watermark %d, cursor %d, want %d", h.prog.Tracker().Watermark(),
				h.prog.Stored().Cursor, h.seq)
		}
		time.Sleep(time.Millisecond)
	}
}

// want is what the records on memPDS produce under the rules: data of
// active repos, lineage of every repo not deleted.
func (h *memHarness) want() []string {
	rules := view.DefaultRules()
	set := map[string]bool{}
	h.pds.mu.Lock()
	defer h.pds.mu.Unlock()
	for did, r := range h.pds.repos {
		if r.status == statusDeleted {
			continue
		}
		for path, v := range r.records {
			coll, rkey := view.SplitPath(path)
			tuples, err := rules.Project(did, coll, rkey, v)
			if err != nil {
				continue
			}
			for _, t := range tuples {
				if r.status == "" {
					set[t.String()] = true
				}
				set[view.LineageTuple(t, view.RecordID(did, coll, rkey)).String()] = true
			}
		}
	}
	return sortedKeys(set)
}

func (h *memHarness) got() []string {
	set := map[string]bool{}
	for _, t := range h.view.matching(func(t view.Tuple) bool {
		return t.ResourceType == view.TypeSpace || t.ResourceType == view.TypeGroup || t.ResourceType == view.TypeLineage
	}) {
		set[t.String()] = true
	}
	return sortedKeys(set)
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func (h *memHarness) assertView(when string) {
	h.t.Helper()
	h.settle()
	if got, want := h.got(), h.want(); !slices.Equal(got, want) {
		h.t.Fatalf("%s: view differs from the records\n got %v\nwant %v", when, got, want)
	}
}

func space(bubble bool) map[string]any {
	return map[string]any{"$type": "com.atproto.space.space", "bubble": bubble}
}

func grant(did, skey, perm, subject string) map[string]any {
	return map[string]any{"$type": "com.atproto.space.relation", "resourceType": "space", "resource": did + "/" + skey,
		"permission": perm, "subjectType": "acct", "subject": subject}
}

const (
	memAlice = "did:plc:alice"
	memBob   = "did:plc:bob"
	spaceCol = "com.atproto.space.space/"
	relCol   = "com.atproto.space.relation/"
)

func TestMemCommitsGapsAndDuplicates(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false),
		relCol + "g1": grant(memAlice, "root", "viewer", memBob), relCol + "g2": grant(memAlice, "root", "viewer", memBob)})
	h.assertView("create")
	h.commit(memAlice, map[string]map[string]any{relCol + "g1": nil})
	h.assertView("one of two producers deleted")
	if !slices.Contains(h.got(), "space:did|plc|alice/root#viewer@acct:did|plc|bob") {
		t.Fatal("a tuple with a live producer was deleted")
	}
	old := h.write(memAlice, map[string]map[string]any{spaceCol + "root": space(true)})
	h.send(old)
	h.assertView("bubble")
	// A commit the consumer never sees, then one that names it as since:
	// the engine resyncs the repo from getRepo.
	h.write(memAlice, map[string]map[string]any{relCol + "g2": nil, spaceCol + "kid": space(false)})
	h.commit(memAlice, map[string]map[string]any{relCol + "g3": grant(memAlice, "kid", "editor", memBob)})
	h.assertView("after a gap")
	if got := metrictest.Value(t, h.reg, "spaces_authz_resyncs_total", "trigger", TriggerGap); got != 1 {
		t.Fatalf("gap resyncs %v, want 1", got)
	}
	// A replayed old commit changes nothing.
	replay := *old
	h.seq++
	replay.Seq = h.seq
	h.send(&replay)
	h.assertView("duplicate")
	if got := metrictest.Value(t, h.reg, "spaces_authz_duplicate_events_total", "stage", "projection"); got != 1 {
		t.Fatalf("duplicates %v, want 1", got)
	}
	if h.view.matching(func(t view.Tuple) bool { return t.Relation == view.RelRev })[0].SubjectID == old.Rev {
		t.Fatal("a duplicate moved the repo's rev back")
	}
}

func TestMemAccountLifecycle(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false),
		relCol + "g1": grant(memAlice, "root", "viewer", memBob)})
	h.assertView("active")
	h.account(memAlice, "deactivated")
	h.assertView("deactivated: data withdrawn, lineage kept")
	// Events of an inactive repo update lineage only.
	h.commit(memAlice, map[string]map[string]any{relCol + "g2": grant(memAlice, "root", "admin", memBob)})
	h.assertView("commit while deactivated")
	h.account(memAlice, "")
	h.assertView("active again: restored by a resync")
	status := h.view.matching(func(t view.Tuple) bool { return t.Relation == view.RelStatus })
	if len(status) != 1 || !strings.HasPrefix(status[0].SubjectID, "active-") {
		t.Fatalf("status tuples %v, want one active", status)
	}
	h.account(memAlice, statusDeleted)
	h.assertView("deleted: everything goes")
	if got := h.view.matching(func(t view.Tuple) bool { return t.Relation == view.RelRev }); len(got) != 0 {
		t.Fatalf("a deleted repo keeps its rev: %v", got)
	}
}

// TestMemFirstRunGate: a first run stores no cursor until its rebuild
// marker is stored, and the rebuild leaves the view equal to the records.
func TestMemFirstRunGate(t *testing.T) {
	h := newMemHarness(t, checkpoint.Empty())
	// Made before the consumer's first start: only a snapshot has it.
	h.write(memBob, map[string]map[string]any{spaceCol + "b": space(false)})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false)})
	deadline := time.Now().Add(time.Second)
	for h.prog.Tracker().Watermark() < h.seq && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(30 * time.Millisecond) // several idle flushes
	if st := h.view.progress(t); st.Cursor != checkpoint.None {
		t.Fatalf("a cursor (%d) was stored before the rebuild marker", st.Cursor)
	}
	h.rebuild("first run")
	h.assertView("after the first run's rebuild")
	if st := h.view.progress(t); st.Cursor != h.seq || st.Rebuild != checkpoint.None {
		t.Fatalf("after the rebuild: %+v, want cursor %d and no marker", st, h.seq)
	}
}

// TestMemRewindResyncsEachRepoOnce: after a rewind, the first replayed
// event of each repo up to the marker resyncs it; later ones are
// duplicates.
func TestMemRewindResyncsEachRepoOnce(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	var events []*firehose.Event
	for i := range 3 {
		for _, did := range []string{memAlice, memBob} {
			ev := h.write(did, map[string]map[string]any{spaceCol + fmt.Sprint("s", i): space(i%2 == 0)})
			events = append(events, ev)
			h.send(ev)
		}
	}
	h.assertView("before the rewind")
	cursor := h.prog.Stored().Cursor
	// Stop, rewind to 0 (the marker at the old cursor), start again and
	// replay what the PDS still has.
	rw, err := checkpoint.Rewind("default", h.view.progress(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.view.Write(h.ctx, nil, rw.Updates(), nil); err != nil {
		t.Fatal(err)
	}
	h.start(h.view.progress(t))
	for _, ev := range events {
		h.send(ev)
	}
	h.assertView("after the replay")
	if got := metrictest.Value(t, h.reg, "spaces_authz_resyncs_total", "trigger", TriggerRewind); got != 2 {
		t.Fatalf("rewind resyncs %v, want one per repo (2)", got)
	}
	if st := h.view.progress(t); st.Rewind != cursor || st.Cursor != cursor {
		t.Fatalf("after the replay: %+v, want cursor and marker %d (it covers that seq)", st, cursor)
	}
	h.commit(memAlice, map[string]map[string]any{spaceCol + "new": space(false)})
	h.assertView("past the marker")
	if st := h.view.progress(t); st.Rewind != checkpoint.None {
		t.Fatalf("the cursor passed the marker and it stays: %+v", st)
	}
}

// TestMemMalformedCommitResyncs: a commit whose ops the stream could not all
// read is not applied in part; the repo is read instead (item 10).
func TestMemMalformedCommitResyncs(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false)})
	h.assertView("before")
	ev := h.write(memAlice, map[string]map[string]any{relCol + "g": grant(memAlice, "root", "viewer", memBob),
		spaceCol + "kid": space(false)})
	ev.Ops = ev.Ops[:1] // the stream lost one op it could not read
	ev.Malformed = firehose.ReasonBadPath
	h.send(ev)
	h.assertView("after a malformed commit")
	if got := metrictest.Value(t, h.reg, "spaces_authz_resyncs_total", "trigger", TriggerMalformed); got != 1 {
		t.Fatalf("malformed resyncs %v, want 1", got)
	}
}

// TestMemResyncingCommitPublishesItsOps: a commit that is applied by a
// resync (here: one of its records arrived without its block) still fans
// out each of its ops once, as that event's changes, and the resync's diff
// follows as resync changes. Before, only the diff was published, so a
// downstream consumer never saw the commit's ops as the commit's (seen in
// the e2e NATS test when the reference PDS lost a block).
func TestMemResyncingCommitPublishesItsOps(t *testing.T) {
	h := &memHarness{t: t, view: &memView{rels: map[view.Tuple]bool{}}, pds: &memPDS{repos: map[string]*memRepo{}},
		reg: prometheus.NewRegistry(), clock: 1_700_000_000_000_000, pub: &memPublisher{}}
	h.start(checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false)})
	h.settle()
	ev := h.write(memAlice, map[string]map[string]any{relCol + "g": grant(memAlice, "root", "viewer", memBob),
		spaceCol + "kid": space(false)})
	lost := -1
	for i := range ev.Ops {
		if ev.Ops[i].Collection+"/"+ev.Ops[i].RKey == spaceCol+"kid" {
			lost = i
			ev.Ops[i].Record = nil
			ev.Ops[i].Err = &firehose.OpError{Reason: firehose.ReasonMissingBlock, Detail: "not in the CAR"}
		}
	}
	h.send(ev)
	h.settle()
	h.assertView("after a commit applied by a resync")
	if got := metrictest.Value(t, h.reg, "spaces_authz_resyncs_total", "trigger", TriggerUnreadable); got != 1 {
		t.Fatalf("unreadable resyncs %v, want 1", got)
	}
	own := h.pub.published(func(c view.Change) bool { return c.Seq == ev.Seq && !c.Resync })
	if len(own) != len(ev.Ops) {
		t.Fatalf("the commit's own changes: %d published, want one per op (%d): %+v", len(own), len(ev.Ops), own)
	}
	for _, c := range own {
		op := ev.Ops[c.OpIndex]
		if c.Collection != op.Collection || c.RKey != op.RKey || c.Action != string(op.Action) || c.CID != op.CID.String() {
			t.Errorf("change %d is %s/%s %s %s, want the op %s %s %s", c.OpIndex, c.Collection, c.RKey, c.Action, c.CID,
				op.Path(), op.Action, op.CID)
		}
		if c.OpIndex == lost && c.Rejected != view.Reason(firehose.ReasonMissingBlock) {
			t.Errorf("the op without its block is published as %q, want rejected %s", c.Rejected, firehose.ReasonMissingBlock)
		}
	}
	diff := h.pub.published(func(c view.Change) bool { return c.Seq == ev.Seq && c.Resync })
	if len(diff) != 2 {
		t.Fatalf("the resync's diff: %d changes, want the two new records: %+v", len(diff), diff)
	}
}

// TestMemTooLargeRepoIsDesynchronized: a repo over the size limit is
// refused without quick retries, marked desynchronized, and the stream
// goes on (item 4).
func TestMemTooLargeRepoIsDesynchronized(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false)})
	h.assertView("before")
	h.failGetRepo(memAlice, fmt.Errorf("too big: %w", firehose.ErrRepoTooLarge))
	h.seq++
	h.send(&firehose.Event{Seq: h.seq, Kind: firehose.KindSync, DID: memAlice, Rev: syntax.NewTID(h.clock+10, 0).String()})
	h.commit(memBob, map[string]map[string]any{spaceCol + "b": space(false)})
	h.settle()
	if st := h.engine.Status(); st.Desynchronized != 1 || st.DesyncDIDs[0] != memAlice {
		t.Fatalf("status %+v, want alice desynchronized", st)
	}
	if got := metrictest.Value(t, h.reg, "spaces_authz_resync_failures_total"); got != 1 {
		t.Fatalf("resync failures %v, want 1 (no quick retries)", got)
	}
	if len(h.view.matching(func(t view.Tuple) bool { return t.Relation == view.RelDesync })) != 1 {
		t.Fatal("no desync marker stored")
	}
	h.failGetRepo(memAlice, nil)
	deadline := time.Now().Add(5 * time.Second)
	for h.engine.Status().Desynchronized != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the retry did not resync alice")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.assertView("after the retry")
}

// TestMemFailedActivationClaimIsRetried: the
// reference PDS's migration (importRepo keeps the imported commit, so
// getRepo on the new PDS answers at the SAME rev the old owner stored;
// activateAccount emits #account active, #identity, #sync). This engine is
// the new PDS's ("default"); alice is owned by "pds-a" at rev R.
//
// The activation's claim fails (a transient getRepo error, 1 attempt here;
// 6 with backoff by default), and the #sync that follows claims nothing:
// same rev, not an activation, owner still active (mayClaim). pds-a then
// deactivates alice and its projector withdraws her data. The failed
// activation claim is asked again, and takes her over. Before claim
// retries, nothing claimed her again until she committed on the new PDS.
func TestMemFailedActivationClaimIsRetried(t *testing.T) {
	// This engine is the new PDS's projector (with one getRepo attempt).
	h := aliceOwnedBy(t, "pds-a", nil)
	h.engine.cfg.ResyncAttempts = 1
	storedRev := h.pds.repos[memAlice].rev // the new PDS serves the imported commit: same rev

	// activateAccount on the new PDS: #account active; getRepo fails once.
	h.failGetRepo(memAlice, errors.New("getRepo: 503 upstream"))
	h.account(memAlice, "")
	h.settle()
	h.failGetRepo(memAlice, nil)
	// ... #sync (its rev is the PDS's repo_root rev, a fresh TID).
	h.seq++
	h.send(&firehose.Event{Seq: h.seq, Kind: firehose.KindSync, DID: memAlice,
		Rev: syntax.NewTID(h.clock+1000, 0).String()})
	h.settle()
	t.Logf("claims %v, refused %v, stored rev %s",
		metrictest.Value(t, h.reg, "spaces_authz_repo_claims_total"),
		metrictest.Value(t, h.reg, "spaces_authz_repo_claims_refused_total"), storedRev)

	// deactivateAccount on pds-a: pds-a's projector withdraws her data.
	h.view.mu.Lock()
	withdrawData(h.view.rels, memAlice)
	h.view.rels[view.StatusTuple(memAlice, "deactivated", 900)] = true
	h.view.mu.Unlock()

	time.Sleep(3 * time.Second) // any retry (1 s backoff) would have run
	owner := h.view.matching(func(tu view.Tuple) bool { return tu.Relation == view.RelSource })
	if !strings.Contains(owner[0].SubjectID, "default") {
		t.Fatalf("alice, active on the new PDS only, is still owned by %v and withdrawn (data: %v); the new PDS's projector never claims her again",
			owner, h.view.matching(func(tu view.Tuple) bool { return tu.ResourceType == view.TypeSpace }))
	}
}

// TestMemGapCountsARejectedRecordOnce: a commit that triggers a resync (a
// gap here) is decided by the resync, which counts what it rejects; the
// commit's own changes (published, triggerChanges) count nothing. Before,
// one hostile record was counted two or three times.
func TestMemGapCountsARejectedRecordOnce(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false)})
	h.assertView("before")
	h.write(memAlice, map[string]map[string]any{spaceCol + "kid": space(false)}) // lost: a gap
	h.commit(memAlice, map[string]map[string]any{relCol + "evil": grant(memBob, "x", "viewer", memAlice)})
	h.assertView("after the gap")
	if got := metrictest.Value(t, h.reg, "spaces_authz_resyncs_total", "trigger", TriggerGap); got != 1 {
		t.Fatalf("gap resyncs %v, want 1", got)
	}
	if got := metrictest.Value(t, h.reg, "spaces_authz_rejected_records_total", "reason", string(view.ReasonForeignResource)); got != 1 {
		t.Fatalf("one hostile record counted %v times as rejected", got)
	}
}

// TestMemOldPDSDoesNotUndoATakedownOnTheNewPDS: this engine ("default") is
// the OLD PDS of alice, which still serves her copy as active (DESIGN §4:
// "the old PDS may keep serving its copy for good"). alice moved to pds-b,
// whose projector claimed her at the SAME rev (the imported commit), and
// she has not committed on pds-b since. The old PDS's rebuild claim is
// refused at the same rev; then pds-b takes alice down (or deletes her).
// Nothing of the old PDS may take the repo back with its stale copy: a
// same-rev claim needs this stream's own activation. Before, a refused
// claim was retried and passed once "the owner no longer has it active"
// (or stored no rev), restoring her grants.
func TestMemOldPDSDoesNotUndoATakedownOnTheNewPDS(t *testing.T) {
	for _, mode := range []string{"takendown", "deleted"} {
		t.Run(mode, func(t *testing.T) {
			// alice now belongs to pds-b (its claim at the same rev).
			h := aliceOwnedBy(t, "pds-b", func(rels map[view.Tuple]bool) {
				rels[view.StatusTuple(memAlice, "active", 500)] = true
			})

			// The old PDS's rebuild lists alice: a claim, refused at the same rev.
			h.rebuild("test")
			if got := metrictest.Value(t, h.reg, "spaces_authz_repo_claims_refused_total"); got != 1 {
				t.Fatalf("refused claims %v, want 1", got)
			}

			// pds-b's projector applies pds-b's takedown (or deletion) of alice.
			h.view.mu.Lock()
			withdrawData(h.view.rels, memAlice)
			for tu := range h.view.rels {
				if mode == "deleted" && (tu.ResourceType == view.TypeLineage && strings.HasPrefix(tu.ResourceID, view.DIDPrefix(memAlice)) ||
					tu.ResourceType == view.TypeRepo && tu.Relation == view.RelRev) {
					delete(h.view.rels, tu)
				}
			}
			delete(h.view.rels, view.StatusTuple(memAlice, "active", 500))
			h.view.rels[view.StatusTuple(memAlice, mode, 900)] = true
			h.view.mu.Unlock()

			time.Sleep(3 * time.Second) // the first retry is due after 0.5-1 s
			owner := h.view.matching(func(tu view.Tuple) bool { return tu.Relation == view.RelSource })
			data := h.view.matching(func(tu view.Tuple) bool {
				return tu.ResourceType == view.TypeSpace && strings.HasPrefix(tu.ResourceID, view.DIDPrefix(memAlice))
			})
			status := h.view.matching(func(tu view.Tuple) bool { return tu.Relation == view.RelStatus })
			if len(data) > 0 {
				t.Fatalf("alice was %s on her new PDS; the old PDS's claim retry took her over with its stale copy:\nowner %v\nstatus %v\ndata %v\nclaims %v",
					mode, owner, status, data, metrictest.Value(t, h.reg, "spaces_authz_repo_claims_total"))
			}
		})
	}
}

// TestMemFailedActivationClaimSurvivesARestart: as
// TestMemFailedActivationClaimIsRetried, but the projector restarts (a
// deploy, a crash, or the ErrOwnership restart of any other repo's claim
// race) between the failed activation claim and its first retry. The
// activation's seq is completed (the cursor moves past it) together with
// repo:<did>#claim@projector:default, so the next process goes on with the
// claim. Before, the retry lived in memory only, and pds-a's deactivation
// left alice withdrawn although she is active on this PDS.
func TestMemFailedActivationClaimSurvivesARestart(t *testing.T) {
	h := aliceOwnedBy(t, "pds-a", nil)
	h.engine.cfg.ResyncAttempts = 1

	h.failGetRepo(memAlice, errors.New("getRepo: 503 upstream"))
	h.account(memAlice, "") // activation on this (new) PDS; its claim fails
	h.settle()
	h.failGetRepo(memAlice, nil)
	if c := h.view.progress(t).Cursor; c < h.seq {
		t.Fatalf("cursor %d did not pass the activation %d", c, h.seq)
	}
	h.restart(nil) // before the retry is due

	// pds-a deactivates alice; its projector withdraws her data.
	h.view.mu.Lock()
	withdrawData(h.view.rels, memAlice)
	h.view.rels[view.StatusTuple(memAlice, "deactivated", 900)] = true
	h.view.mu.Unlock()
	time.Sleep(3 * time.Second)
	owner := h.view.matching(func(tu view.Tuple) bool { return tu.Relation == view.RelSource })
	if !strings.Contains(owner[0].SubjectID, "default") {
		t.Fatalf("after a restart the failed activation claim is never asked again: alice (active here) stays owned by %v and withdrawn", owner)
	}
	waitForMem(t, "the claim marker removed by the claim", func() bool {
		return len(h.view.matching(func(tu view.Tuple) bool { return tu.Relation == view.RelClaim })) == 0
	})
}

// waitForMem polls cond for up to 5 s.
func waitForMem(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
