package projector

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/ipfs/go-cid"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/backoff"
	"github.com/spaces-authz/spaces-authz/view"
)

// Defaults for Config fields left zero.
const (
	// MaxBatchUpdates is SpiceDB's 1,000 updates a call minus the
	// heartbeat (2) and the progress step (checkpoint.MaxStepUpdates).
	MaxBatchUpdates          = 1000 - 2 - checkpoint.MaxStepUpdates
	DefaultBatchUpdates      = MaxBatchUpdates
	DefaultCacheRepos        = 10000
	DefaultHeldPerRepo       = 1000
	DefaultResyncConcurrency = 4
	DefaultFlushEvery        = time.Second
	DefaultRevFlushAfter     = 10 * time.Second
	// maxHeldEntries bounds the queue of deferred revs (stale entries
	// included): past it the oldest are written at once.
	maxHeldEntries        = 100000
	DefaultResyncAttempts = 6
	inputDepth            = 256
)

// ErrRestart is returned by Run after SpiceDB refused a relationship: the
// refused tuples are now in Config.Poison, nothing of the refused batch was
// applied, and the caller restarts the pipeline from the stored cursor so
// the records producing them are rejected.
var ErrRestart = errors.New("projector: restart from the stored cursor to reject a refused record")

// Config of an Engine.
type Config struct {
	// Rules (required) decide what records produce.
	Rules *view.Rules
	// Store (required) reads state back from SpiceDB.
	Store Store
	// Writer (required) commits batches.
	Writer Writer
	// Fetcher (required) reads repos for resyncs.
	Fetcher Fetcher
	// Progress (required) is the source's cursor: the engine marks events
	// done on its Tracker when they are fully applied, and every write
	// carries the progress step it plans.
	Progress *checkpoint.Progress
	// Publisher (optional) fans applied changes out; the engine marks an
	// event done only once its messages are acknowledged.
	Publisher Publisher
	// Poison holds relationships SpiceDB refused; records producing them are
	// rejected. Shared across restarts of the pipeline (may be nil).
	Poison *Poison
	// BatchUpdates bounds the updates of one write (default and at most
	// MaxBatchUpdates).
	BatchUpdates int
	// CacheRepos bounds the repos whose lineage is kept in memory, and
	// CacheRecords (0: no bound) the records of their lineage. A bound
	// below the working set makes every evicted repo's next event read
	// its lineage back from SpiceDB: on the memory datastore, whose
	// prefix reads scan, a 50 %-projected stream fell from 3,000 to 57
	// frames/s with 200,000 records for a working set of 670,000.
	CacheRepos, CacheRecords int
	// HeldPerRepo bounds the live events held while a repo resyncs.
	HeldPerRepo int
	// ResyncConcurrency bounds concurrent getRepo calls (default 4).
	ResyncConcurrency int
	// ResyncAttempts before a resync is given up (default 6).
	ResyncAttempts int
	// ResyncRate bounds getRepo calls per second, to be polite to the PDS
	// during a rebuild (0: unlimited).
	ResyncRate float64
	// AdoptUnowned: a repo with no owner recorded (stored before ownership
	// existed) is this source's in every respect, removal included. Set it
	// when this source is the only one that ever stored a cursor in this
	// SpiceDB; otherwise such a repo may be another PDS's, and an answer of
	// "no such repo" from this source's PDS removes nothing of it.
	AdoptUnowned bool
	// OnRebuilt is called (on the applier goroutine) each time a rebuild's
	// writes are all committed. Optional.
	OnRebuilt func()
	// OnStale is called (on the applier goroutine) with the start of a
	// rebuild of an incomplete view (RebuildIncompleteView, OutdatedCursor,
	// a live reconnect without a cursor, an interrupted rebuild), and with
	// the zero time once that rebuild's writes are all committed. Optional.
	OnStale func(since time.Time)
	// FlushEvery: when idle, the cursor and heartbeat are written this
	// often (default 1s).
	FlushEvery time.Duration
	// RevFlushAfter bounds how long a commit that changed no projected
	// relationship may leave its repo's rev unstored (default 10s). Such a
	// rev rides, collapsed per repo, with the repo's next write; past this
	// age (or when the stream is idle, or at shutdown) it is written on its
	// own. Until then the stored cursor stays below that commit, so a crash
	// replays at most this much of the stream (DESIGN §4). Negative: every
	// commit writes its rev with its own batch (nothing is deferred).
	RevFlushAfter time.Duration
	Logger        *slog.Logger
	Metrics       *Metrics
}

// Validate names the first missing field.
func (c *Config) Validate() error {
	switch {
	case c.Rules == nil:
		return errors.New("projector: config: Rules is required")
	case c.Store == nil:
		return errors.New("projector: config: Store is required")
	case c.Writer == nil:
		return errors.New("projector: config: Writer is required")
	case c.Fetcher == nil:
		return errors.New("projector: config: Fetcher is required")
	case c.Progress == nil:
		return errors.New("projector: config: Progress is required")
	case c.BatchUpdates > MaxBatchUpdates:
		return fmt.Errorf("projector: config: BatchUpdates %d is over %d (SpiceDB's 1,000 a call, less the cursor, markers and heartbeat)",
			c.BatchUpdates, MaxBatchUpdates)
	}
	return nil
}

// Engine turns stream events into SpiceDB writes (DESIGN §3–§4). It is the
// firehose.Handler: HandleEvent runs on the stream's per-DID lanes and only
// prefetches state; every decision is taken on one goroutine (the applier)
// in per-DID stream order, on an in-memory overlay that includes decisions
// not yet committed. A second goroutine writes batches in order.
type Engine struct {
	cfg Config
	log *slog.Logger

	in      chan *firehose.Event
	resyncs chan *resyncResult
	// rebuild receives requests to resync every repo (OutdatedCursor, a
	// first run, reset detection).
	rebuild chan rebuildRequest
	listed  chan listResult
	limiter *rate.Limiter
	// tracker is the source's watermark (Progress.Tracker()).
	tracker *checkpoint.Tracker
	// rewind is the run's rewind marker (checkpoint.None when none).
	rewind int64
	// app is the applier's state; only its goroutine touches it (Load
	// fills it before Run starts).
	app *applier

	mu     sync.Mutex // guards states and the lineage pointers in them
	states map[string]*didState
	lru    *list.List // of *didState with loaded lineage, most recent first

	committed atomic.Uint64
	token     atomic.Pointer[string]
	applied   *appliedIndex
	wg        sync.WaitGroup

	emptyTree cid.Cid
	status    engineStatus
	fetchSem  chan struct{}
}

// Publisher fans applied changes out (NATS). Publish must not return before
// the messages are durably accepted, or must call done later; the engine
// treats an event as applied only after done.
type Publisher interface {
	Publish(ctx context.Context, changes []view.Change, token string, done func()) error
}

// New checks cfg and builds an engine.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BatchUpdates <= 0 {
		cfg.BatchUpdates = DefaultBatchUpdates
	}
	if cfg.CacheRepos <= 0 {
		cfg.CacheRepos = DefaultCacheRepos
	}
	if cfg.CacheRecords <= 0 {
		cfg.CacheRecords = math.MaxInt
	}
	if cfg.HeldPerRepo <= 0 {
		cfg.HeldPerRepo = DefaultHeldPerRepo
	}
	if cfg.ResyncConcurrency <= 0 {
		cfg.ResyncConcurrency = DefaultResyncConcurrency
	}
	if cfg.ResyncAttempts <= 0 {
		cfg.ResyncAttempts = DefaultResyncAttempts
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = DefaultFlushEvery
	}
	if cfg.RevFlushAfter == 0 {
		cfg.RevFlushAfter = DefaultRevFlushAfter
	}
	if cfg.Poison == nil {
		cfg.Poison = NewPoison()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	empty := mst.NewEmptyTree()
	root, err := empty.RootCID()
	if err != nil {
		return nil, fmt.Errorf("projector: empty tree CID: %w", err)
	}
	e := &Engine{cfg: cfg, log: log.With("component", "projector"), in: make(chan *firehose.Event, inputDepth),
		resyncs: make(chan *resyncResult, cfg.ResyncConcurrency), rebuild: make(chan rebuildRequest, 4),
		listed: make(chan listResult, 1),
		states: map[string]*didState{}, lru: list.New(), applied: newAppliedIndex(), rewind: cfg.Progress.Rewind(), tracker: cfg.Progress.Tracker(),
		emptyTree: *root, fetchSem: make(chan struct{}, cfg.ResyncConcurrency)}
	e.app = &applier{e: e, rewound: map[string]bool{}, retries: map[string]*retry{}, claimRetries: map[string]*retry{}}
	empty0 := ""
	e.token.Store(&empty0)
	if cfg.ResyncRate > 0 {
		e.limiter = rate.NewLimiter(rate.Limit(cfg.ResyncRate), cfg.ResyncConcurrency)
	}
	return e, nil
}

// Token is the ZedToken of the newest committed write ("" before one).
func (e *Engine) Token() string { return *e.token.Load() }

// Load fills the repo index from SpiceDB (every repo with stored
// bookkeeping). Call it once before Run.
func (e *Engine) Load(ctx context.Context) error {
	repos, err := e.cfg.Store.LoadRepos(ctx, "")
	if err != nil {
		return fmt.Errorf("projector: load repo index: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	foreign := 0
	for _, r := range repos {
		st := r.Status
		if st == "active" {
			st = ""
		}
		d := &didState{did: r.DID, known: true, owner: r.Source, rev: r.Rev, placedRev: r.Rev, status: st, statusSeq: r.StatusSeq,
			hasStatus: r.Status != "", desync: r.Desync, desyncSeq: r.DesyncSeq,
			incomplete: r.Incomplete, incompleteSeq: r.IncompleteSeq}
		e.states[r.DID] = d
		if slices.Contains(r.Claims, e.self()) {
			if e.isForeign(d) {
				// An activation seen before the restart: its claim goes on.
				d.claimPending = true
				e.app.retryClaim(d, true)
			} else {
				e.app.stale = append(e.app.stale, view.ClaimTuple(r.DID, e.self()))
			}
		}
		if e.isForeign(d) {
			foreign++ // another source's repo: its tuples are not ours to tidy
			continue
		}
		for _, old := range r.StaleStatuses {
			e.app.stale = append(e.app.stale, view.Tuple{ResourceType: view.TypeRepo, ResourceID: view.RepoID(r.DID),
				Relation: view.RelStatus, SubjectType: view.TypeStatus, SubjectID: old})
		}
		for _, old := range r.StaleRevs {
			e.app.stale = append(e.app.stale, view.RevTuple(r.DID, old))
		}
		if d.desync {
			e.app.desynced(d)
		} else if d.incomplete {
			e.app.readAgain(d)
		}
		e.applied.set(r.DID, r.Rev, "")
	}
	e.log.Info("repo index loaded", "repos", len(repos), "owned_by_other_sources", foreign)
	return nil
}

// self is the source this engine projects.
func (e *Engine) self() string { return e.cfg.Progress.Source() }

// mayRemove reports whether an answer of "no such repo" from this source's
// PDS may remove d: d is this source's, or has no owner recorded and this
// source adopts those.
func (e *Engine) mayRemove(d *didState) bool {
	return d.owner == e.self() || (d.owner == "" && e.cfg.AdoptUnowned)
}

// isForeign reports a repo another source owns: this engine only ever
// takes it over (a claim), never changes it otherwise. The lanes call it
// under e.mu; the applier, which alone writes owner, without.
func (e *Engine) isForeign(d *didState) bool { return d.owner != "" && d.owner != e.self() }

// didState is the applier's view of one repo. Fields other than lin, elem,
// gen and queued are touched only by the applier goroutine; those are
// guarded by Engine.mu because the lanes install loaded lineage and count
// the events they hand over.
type didState struct {
	did   string
	known bool // bookkeeping is stored (or decided) for this repo
	// owner is the source that owns the repo ("" when none is recorded);
	// guarded by Engine.mu like known, since the lanes read it.
	owner string
	// rev is the newest applied rev (gap detection); placedRev is the rev
	// whose tuple SpiceDB stores or a placed batch will store. They differ
	// while a commit that changed no projected relationship holds the
	// cursor (holdSeq, since holdAt) until its rev rides with a write.
	rev       string
	placedRev string
	holdSeq   int64
	holdAt    time.Time
	status    string // "" when active, else the account status
	statusSeq int64
	hasStatus bool     // a status tuple is stored (or decided); its seq may be 0
	lin       *lineage // nil until loaded
	elem      *list.Element
	gen       uint64 // bumped when lin is evicted
	queued    int    // events handed to the applier, not yet decided
	lastBatch uint64
	resync    *resyncJob
	// desync: the repo's last resync failed (at desyncSeq); it is retried
	// until one succeeds.
	desync    bool
	desyncSeq int64
	// incomplete: the repo's last snapshot (at incompleteSeq) lacked
	// record blocks; it is read again until one is whole (the marker is
	// stored, so a restart goes on reading it).
	incomplete    bool
	incompleteSeq int64
	// claimPending: this source stored repo:<did>#claim (an activation
	// on its PDS whose claim has not completed yet).
	claimPending bool
	claimBatch   uint64 // the batch that stores it (0: stored before this process)
}

func (d *didState) active() bool { return d.status == "" }

// HandleEvent is called on the stream's per-DID lanes. It settles events
// that need no write (identity, commits of unknown repos with no projected
// op) at once, prefetches the repo's lineage when a decision will need it,
// and hands the event to the applier.
func (e *Engine) HandleEvent(ctx context.Context, ev *firehose.Event) error {
	e.mu.Lock()
	d := e.states[ev.DID]
	fast := false
	if d == nil && ev.Seq > e.rewind {
		switch ev.Kind {
		case firehose.KindIdentity:
			fast = true
		case firehose.KindCommit:
			fast = len(ev.Ops) == 0 && ev.Malformed == "" && ev.Unverified == ""
		case firehose.KindAccount:
			fast = ev.Active
		case firehose.KindSync:
			fast = ev.SyncData.Defined() && ev.SyncData.Equals(e.emptyTree)
		}
	}
	needLineage := d != nil && d.known && !e.isForeign(d) && d.lin == nil && e.needsLineage(ev)
	if !fast {
		// The state exists (and can't be evicted) from now until the
		// applier has decided this event: later events of the repo must
		// follow it to the applier, or a commit could skip past the rev it
		// sets and look like a gap.
		if d == nil {
			d = &didState{did: ev.DID, lin: newLineage()}
			d.elem = e.lru.PushFront(d)
			e.states[ev.DID] = d
		}
		d.queued++
	}
	e.mu.Unlock()
	if fast {
		e.cfg.Metrics.eventApplied(ev.Kind.String())
		e.tracker.Done(ev.Seq)
		return nil
	}
	if needLineage {
		if err := e.ensureLineage(ctx, ev.DID); err != nil {
			return err
		}
	}
	select {
	case e.in <- ev:
		return nil
	case <-ctx.Done():
		return nil
	}
}

// Tracks reports whether the engine holds a state for did: a repo whose
// rev chain it follows, so that a stream that verifies commits should
// verify that repo's commits even when none of their ops is projected
// (firehose.Config.VerifyAlso), or it would not take their revs
// (Event.Unchecked) and the next projected commit would resync as a gap.
func (e *Engine) Tracks(did string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.states[did] != nil
}

// dequeued counts an event the applier took from its input.
func (e *Engine) dequeued(did string) {
	e.mu.Lock()
	if d := e.states[did]; d != nil && d.queued > 0 {
		d.queued--
	}
	e.mu.Unlock()
}

func (e *Engine) needsLineage(ev *firehose.Event) bool {
	switch ev.Kind {
	case firehose.KindCommit:
		return len(ev.Ops) > 0
	case firehose.KindAccount:
		return true
	}
	return false
}

// HandleInfo reacts to #info: OutdatedCursor means events were lost, so
// every repo is resynced (a rebuild).
func (e *Engine) HandleInfo(ctx context.Context, info firehose.Info) error {
	var reason string
	switch info.Name {
	case firehose.InfoOutdatedCursor:
		reason = "outdated cursor"
		e.log.Warn("the PDS no longer has the events after our cursor: rebuilding the view from repo snapshots")
	case firehose.InfoLiveGap:
		reason = "live reconnect without a cursor"
		e.log.Warn("reconnected without a cursor: rebuilding the view from repo snapshots")
	default:
		return nil
	}
	select {
	case e.rebuild <- rebuildRequest{reason: reason, done: make(chan struct{}), stale: true}:
	case <-ctx.Done():
	}
	return nil
}

// ensureLineage loads a repo's lineage from SpiceDB into the cache. It is
// safe to call from any goroutine: the read happens only while the repo has
// nothing uncommitted (unloaded state can't be dirty), and the result is
// installed only if the state was not evicted meanwhile.
func (e *Engine) ensureLineage(ctx context.Context, did string) error {
	bo := backoff.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for {
		e.mu.Lock()
		d := e.states[did]
		if d == nil || d.lin != nil || !d.known {
			e.mu.Unlock()
			return nil
		}
		gen := d.gen
		e.mu.Unlock()
		entries, err := e.cfg.Store.LoadLineage(ctx, did, e.Token())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.log.Warn("loading lineage failed; retrying", "did", did, "err", err)
			if err := bo.Wait(ctx); err != nil {
				return err
			}
			continue
		}
		e.mu.Lock()
		if d.lin == nil && d.gen == gen {
			l := newLineage()
			for _, en := range entries {
				l.add(en.Tuple, en.Path)
			}
			d.lin = l
			d.elem = e.lru.PushFront(d)
			e.cfg.Metrics.setCached(e.lru.Len())
		}
		loaded := d.lin != nil
		e.mu.Unlock()
		if loaded {
			return nil
		}
	}
}

// dropLineage forgets d's cached lineage (a claim reads it again, fresh).
// Only for a repo with nothing of this engine's pending.
func (e *Engine) dropLineage(d *didState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if d.elem != nil {
		e.lru.Remove(d.elem)
		d.elem = nil
	}
	d.lin = nil
	d.gen++
}

// installLineage replaces did's cached lineage with entries read from
// SpiceDB (a claim's fresh read; the repo is pinned by its resync).
func (e *Engine) installLineage(did string, entries []view.LineageEntry) {
	l := newLineage()
	for _, en := range entries {
		l.add(en.Tuple, en.Path)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	d := e.states[did]
	if d == nil {
		return
	}
	if d.elem != nil {
		e.lru.Remove(d.elem)
	}
	d.lin = l
	d.elem = e.lru.PushFront(d)
	e.cfg.Metrics.setCached(e.lru.Len())
}

// state returns the applier's state for did, creating an empty one for a
// repo with nothing stored.
func (e *Engine) state(did string) *didState {
	e.mu.Lock()
	defer e.mu.Unlock()
	d := e.states[did]
	if d == nil {
		d = &didState{did: did, lin: newLineage()}
		d.elem = e.lru.PushFront(d)
		e.states[did] = d
		e.cfg.Metrics.setCached(e.lru.Len())
	}
	return d
}

// setOwner records who owns d (the lanes read it).
func (e *Engine) setOwner(d *didState, owner string) {
	e.mu.Lock()
	d.owner = owner
	e.mu.Unlock()
}

// markKnown records that a repo now has bookkeeping in SpiceDB (the lanes
// read this flag).
func (e *Engine) markKnown(d *didState) {
	if d.known {
		return
	}
	e.mu.Lock()
	d.known = true
	e.mu.Unlock()
}

// lineageOf returns d's lineage, loading it synchronously in the rare case
// the lanes did not prefetch it.
func (e *Engine) lineageOf(ctx context.Context, d *didState) (*lineage, error) {
	e.mu.Lock()
	l := d.lin
	if l != nil && d.elem != nil {
		e.lru.MoveToFront(d.elem)
	}
	e.mu.Unlock()
	if l != nil {
		return l, nil
	}
	if err := e.ensureLineage(ctx, d.did); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if d.lin == nil {
		return nil, fmt.Errorf("projector: lineage of %s did not load", d.did)
	}
	return d.lin, nil
}

// evict drops cached lineage of clean repos beyond CacheRepos repos or
// CacheRecords records, least recently used first. Repos with uncommitted
// decisions or a resync in flight stay. It runs on the applier goroutine,
// which alone changes lineage.
func (e *Engine) evict() {
	committed := e.committed.Load()
	e.mu.Lock()
	defer e.mu.Unlock()
	records := 0
	if e.cfg.CacheRecords != math.MaxInt { // counted only when bounded: this runs after every write
		for el := e.lru.Front(); el != nil; el = el.Next() {
			if l := el.Value.(*didState).lin; l != nil {
				records += len(l.byRecord)
			}
		}
	}
	for el := e.lru.Back(); el != nil && (e.lru.Len() > e.cfg.CacheRepos || records > e.cfg.CacheRecords); {
		d := el.Value.(*didState)
		prev := el.Prev()
		if d.lastBatch <= committed && d.resync == nil && d.queued == 0 {
			if d.lin != nil {
				records -= len(d.lin.byRecord)
			}
			e.lru.Remove(el)
			d.elem, d.lin = nil, nil
			d.gen++
			if !d.known {
				delete(e.states, d.did)
			}
		}
		el = prev
	}
	e.cfg.Metrics.setCached(e.lru.Len())
}

// Run applies events until ctx ends (nil), or a fatal error: a writer error
// (fencing, reset, schema) or ErrRestart.
func (e *Engine) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	writeCh := make(chan *batch)
	doneCh := make(chan batchResult, 1)
	appDone := make(chan struct{})
	g.Go(func() error { return e.writeLoop(gctx, writeCh, doneCh, appDone) })
	g.Go(func() error { defer close(appDone); return e.applyLoop(gctx, writeCh, doneCh) })
	g.Go(func() error { return e.heartbeatLoop(gctx) })
	err := g.Wait()
	e.wg.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// heartbeatLoop keeps the lease alive while the write loop is stalled (on
// fan-out backpressure, say): the writer refreshes the heartbeat in any
// write when it is due, so a write carrying nothing else is enough.
func (e *Engine) heartbeatLoop(ctx context.Context) error {
	t := time.NewTicker(e.cfg.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := e.cfg.Writer.Write(ctx, nil, nil, nil); err != nil && ctx.Err() == nil {
				return fmt.Errorf("projector: heartbeat: %w", err)
			}
		}
	}
}
