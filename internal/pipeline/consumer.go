package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/backoff"
	"github.com/spaces-authz/spaces-authz/internal/redact"
	"github.com/spaces-authz/spaces-authz/projector"
	"github.com/spaces-authz/spaces-authz/spice"
)

// The pipeline's parts meet through interfaces their users define; these
// are the implementations it plugs in.
var (
	_ projector.Store     = (*spice.Store)(nil)
	_ projector.Writer    = (*spice.Writer)(nil)
	_ projector.Fetcher   = (*firehose.SyncClient)(nil)
	_ projector.Publisher = (*fanout.Publisher)(nil)
	_ firehose.Handler    = (*projector.Engine)(nil)
)

// Consumer is a running (or starting) daemon; its accessors serve the HTTP
// endpoints and `status`.
type Consumer struct {
	cfg    Config
	log    *slog.Logger
	client *spice.Client
	fhm    *firehose.Metrics
	pm     *projector.Metrics
	sm     *spice.Metrics
	cm     *checkpoint.Metrics
	nm     *fanout.Metrics
	source *firehose.Source // the PDS's head and link, and the lag, across runs
	pub    *fanout.Publisher
	// verifier checks commits and snapshots (nil: Config.VerifyCommits off).
	verifier *firehose.Verifier
	started  time.Time

	mu       sync.Mutex
	run      *run // the current run; nil before the first
	state    State
	lastErr  error
	fenced   bool
	restarts int
	rebuilt  int
	retry    backoff.Backoff // between runs that end on an unavailable SpiceDB
}

// run is one start of the pipeline from the stored cursor.
type run struct {
	progress *checkpoint.Progress
	writer   *spice.Writer
	sync     projector.Fetcher
	engine   *projector.Engine
	stream   *firehose.Client
}

// New checks cfg and registers metrics.
func New(cfg Config) (*Consumer, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	client, err := spice.Dial(cfg.SpiceDB)
	if err != nil {
		return nil, err
	}
	c := &Consumer{cfg: cfg, log: cfg.Logger, client: client, fhm: firehose.NewMetrics(cfg.Registry),
		pm: projector.NewMetrics(cfg.Registry), sm: spice.NewMetrics(cfg.Registry),
		cm: checkpoint.NewMetrics(cfg.Registry), source: firehose.NewSource(cfg.Registry), state: StateStarting,
		started: time.Now()}
	if cfg.NATS != nil {
		c.nm = fanout.NewMetrics(cfg.Registry)
	}
	if cfg.VerifyCommits {
		// Behind a relay the op list and prevData are the relay's word:
		// without prevData a dropped op (a revocation) can't be seen, so
		// it is required (every commit of a sync 1.1 host carries it).
		if c.verifier, err = firehose.NewVerifier(firehose.VerifierConfig{Directory: cfg.Identity,
			RequirePrevData: cfg.Relay != nil}); err != nil {
			_ = client.Close()
			return nil, fmt.Errorf("pipeline: %w", err)
		}
	}
	cfg.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "ready",
			Help: "1 when connected to the PDS, holding the lease, and not failed."},
			func() float64 {
				if c.Snapshot().Ready() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spaces_authz", Subsystem: "firehose",
			Name: "last_event_age_seconds",
			Help: "Seconds since the newest event was read from the stream (alert on silence while the PDS is up)."},
			func() float64 {
				if t := c.lastEventTime(); !t.IsZero() {
					return time.Since(t).Seconds()
				}
				return time.Since(c.started).Seconds()
			}),
	)
	return c, nil
}

// Close releases the SpiceDB and NATS connections.
func (c *Consumer) Close() error {
	if c.pub != nil {
		c.pub.Close()
	}
	return c.client.Close()
}

// SpiceDB is the consumer's SpiceDB client.
func (c *Consumer) SpiceDB() *spice.Client { return c.client }

// connectNATS dials NATS and ensures the stream (once per process).
func (c *Consumer) connectNATS(ctx context.Context) error {
	if c.cfg.NATS == nil || c.pub != nil {
		return nil
	}
	nc := *c.cfg.NATS
	if nc.Source == "" {
		u, err := url.Parse(c.cfg.PDSURL)
		if err != nil {
			return fmt.Errorf("pipeline: PDS URL: %w", err)
		}
		nc.Source = u.Host
	}
	nc.Logger, nc.Metrics = c.log, c.nm
	if nc.Relationship == nil {
		nc.Relationship = c.client.Namespace().String
	}
	pub, err := fanout.Connect(ctx, nc)
	if err != nil {
		return err
	}
	c.pub = pub
	c.log.Info("fan-out to NATS JetStream on", "url", redact.URL(nc.URL), "stream", pub.Stream(), "source", nc.Source)
	return nil
}

// noteError records an error the pipeline retries (status shows it as
// last_error while the state stays what it is).
func (c *Consumer) noteError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = err
}

func (c *Consumer) setState(s State, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = s
	if err != nil {
		c.lastErr = err
	}
	if errors.Is(err, spice.ErrFenced) {
		c.fenced = true
	}
}

// fail records a fatal error and returns it.
func (c *Consumer) fail(err error) error {
	c.setState(StateFailed, err)
	if errors.Is(err, spice.ErrFenced) {
		c.sm.SetLeaseState(spice.LeaseFenced)
	}
	return err
}

// Run follows the stream until ctx ends (nil) or a fatal error. It takes the
// lease (waiting while another consumer holds it), and starts a new run
// from the stored cursor after SpiceDB refused a relationship or was reset.
func (c *Consumer) Run(ctx context.Context) error {
	if err := c.client.CheckSchema(ctx); err != nil {
		return c.fail(err)
	}
	if err := c.connectNATS(ctx); err != nil {
		return c.fail(err)
	}
	c.setState(StateWaitingForLease, nil)
	lease, err := spice.AcquireLease(ctx, c.leaseConfig(!c.cfg.Lease.NoWait))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return c.fail(err)
	}
	poison := projector.NewPoison()
	rebuild := c.cfg.Rebuild.AtStart
	for {
		err := c.runOnce(ctx, lease, poison, rebuild)
		rebuild = false
		var again bool
		lease, again, err = c.next(ctx, err, poison)
		if !again {
			return err
		}
	}
}

// next decides what follows a run that ended with err: another run (from
// the lease state it returns), or the end of Run (with its result).
func (c *Consumer) next(ctx context.Context, err error, poison *projector.Poison) (spice.ProjectorState, bool, error) {
	switch {
	case errors.Is(err, spice.ErrReset) && !c.cfg.NoAutoRebuild:
		c.log.Error("SpiceDB was reset under the consumer (lease and cursor are gone): rebuilding the view from repo snapshots")
		c.setState(StateResetRebuild, err)
		lease, err := c.reacquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return lease, false, nil
			}
			return lease, false, c.fail(err)
		}
		return lease, true, nil
	case errors.Is(err, spice.ErrReset):
		return spice.ProjectorState{}, false,
			c.fail(fmt.Errorf("%w; not rebuilding (--no-auto-rebuild): check SpiceDB, then run `consumer rebuild`", err))
	case errors.Is(err, projector.ErrRestart), errors.Is(err, spice.ErrOwnership), errors.Is(err, spice.ErrProgressMoved):
		// A refused relationship is poisoned now; a repo changed hands
		// (another source took one over, or one this run claimed moved
		// first). Either way, nothing of the failed write was applied:
		// start again from the stored cursor with a fresh repo index.
		return c.restart(ctx, err, poison, false)
	case err == nil || ctx.Err() != nil:
		c.setState(StateStopped, nil)
		c.release()
		return spice.ProjectorState{}, false, nil
	case spice.Classify(err) == spice.ClassTransient:
		// A read of the run failed while SpiceDB or its datastore was
		// unavailable (writes retry in place). Nothing past the stored
		// cursor is lost: start again from it once SpiceDB answers.
		return c.restart(ctx, err, poison, true)
	default:
		return spice.ProjectorState{}, false, c.fail(err)
	}
}

// restart starts a new run from the stored cursor after a run that ended
// with why. It re-reads the lease, waiting with backoff while SpiceDB is
// unavailable; after a transient failure it first waits too, so that a
// SpiceDB that keeps failing is not asked in a tight loop.
func (c *Consumer) restart(ctx context.Context, why error, poison *projector.Poison, transient bool) (
	spice.ProjectorState, bool, error) {
	c.pm.Restarted()
	c.mu.Lock()
	c.restarts++
	c.mu.Unlock()
	c.log.Warn("restarting the pipeline from the stored cursor", "poisoned", poison.Len(), "why", why)
	if transient {
		c.setState(StateRetrying, why)
	}
	for {
		if transient {
			if err := c.retry.Wait(ctx); err != nil {
				return c.next(ctx, nil, poison) // stopped meanwhile: a clean stop
			}
		}
		lease, err := c.client.ReadProjector(ctx, c.cfg.Lease.Name)
		switch {
		case err == nil:
			c.retry.Reset()
			if lease.Holder != c.cfg.Lease.Holder {
				return lease, false, fmt.Errorf("%w (holder now %q)", spice.ErrFenced, lease.Holder)
			}
			return lease, true, nil
		case ctx.Err() != nil:
			return c.next(ctx, nil, poison) // stopped meanwhile: a clean stop
		case spice.Classify(err) != spice.ClassTransient:
			return lease, false, err
		}
		transient = true
		c.setState(StateRetrying, err)
		c.log.Warn("SpiceDB unavailable; waiting to restart the pipeline", "err", err, "attempt", c.retry.Attempts())
	}
}

// reacquire waits for SpiceDB's schema to be back after a reset and takes
// the (now empty) lease again.
func (c *Consumer) reacquire(ctx context.Context) (spice.ProjectorState, error) {
	for {
		err := c.client.CheckSchema(ctx)
		if err == nil {
			break
		}
		c.log.Warn("waiting for the SpiceDB schema to be applied (consumer schema apply)", "err", err)
		select {
		case <-ctx.Done():
			return spice.ProjectorState{}, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return spice.AcquireLease(ctx, c.leaseConfig(true))
}

// release gives the lease up after a clean stop.
func (c *Consumer) release() {
	c.mu.Lock()
	r := c.run
	c.mu.Unlock()
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.writer.Release(ctx); err != nil {
		c.log.Warn("could not release the lease; the next consumer waits for it to go stale", "err", err)
	}
}

// runOnce runs the pipeline from the stored cursor until it stops.
func (c *Consumer) runOnce(ctx context.Context, lease spice.ProjectorState, poison *projector.Poison, rebuild bool) error {
	adopt, err := c.onlySource(ctx)
	if err != nil {
		return err
	}
	r, err := c.newRun(lease, poison, adopt)
	if err != nil {
		return err
	}
	if err := r.engine.Load(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	c.run = r
	c.mu.Unlock()
	stored := r.progress.Stored()
	// No cursor stored (a first run, or SpiceDB was reset): the stream
	// starts live and the view is built from repo snapshots meanwhile
	// (DESIGN §5). The state says so from the start: the view is not
	// complete until that rebuild commits, even while the stream connects.
	live := stored.Cursor == checkpoint.None
	if live || rebuild {
		c.setState(StateRebuilding, nil)
	} else {
		c.setState(StateRunning, nil)
	}
	c.log.Info("consumer running", "projector", c.cfg.Lease.Name, "holder", c.cfg.Lease.Holder, "cursor", stored.Cursor,
		"pds", redact.URL(c.cfg.PDSURL))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.engine.Run(gctx) })
	g.Go(func() error { return r.stream.Run(gctx) })
	if c.pub != nil {
		g.Go(func() error { return c.pub.Run(gctx) })
	}
	if c.cfg.ReconcileEvery > 0 {
		rec := &projector.Reconciler{Rules: c.cfg.Engine.Rules, Store: spice.NewStore(c.client), Fetcher: r.sync,
			Source: c.cfg.Lease.Name, Logger: c.log, Metrics: c.pm}
		g.Go(func() error {
			return rec.Run(gctx, c.cfg.ReconcileEvery, func(ctx context.Context, did string) error {
				_, err := r.engine.Rebuild(ctx, "reconcile", []string{did})
				return err
			})
		})
	}
	if live || rebuild {
		reason := "consumer rebuild"
		if live {
			reason = "first run: no cursor stored"
		}
		if err := c.requestRebuild(gctx, g, r, reason, live); err != nil {
			return g.Wait()
		}
	}
	err = g.Wait()
	if errors.Is(err, errRebuilt) {
		return nil
	}
	return err
}

// newRun builds a run's parts from the lease state.
func (c *Consumer) newRun(lease spice.ProjectorState, poison *projector.Poison, adopt bool) (*run, error) {
	progress, err := checkpoint.New(checkpoint.Config{Source: c.cfg.Lease.Name, Stored: lease.Progress,
		MaxInFlight: c.cfg.Stream.MaxInFlight, MaxInFlightBytes: c.cfg.Stream.MaxInFlightBytes, Metrics: c.cm})
	if err != nil {
		return nil, err
	}
	r := &run{progress: progress}
	r.writer = spice.NewWriter(spice.WriterConfig{Client: c.client, Name: c.cfg.Lease.Name, Holder: c.cfg.Lease.Holder,
		HeartbeatMs: lease.HeartbeatMs, Epoch: lease.Epoch, HeartbeatEvery: c.cfg.Lease.HeartbeatEvery, Logger: c.log,
		OnRetry: c.noteError,
		Metrics: c.sm})
	if r.sync, err = c.fetcher(); err != nil {
		return nil, err
	}
	var publisher projector.Publisher
	if c.pub != nil {
		publisher = c.pub
	}
	ec := c.cfg.Engine
	r.engine, err = projector.New(projector.Config{Rules: ec.Rules, Store: spice.NewStore(c.client), Writer: r.writer,
		Fetcher: r.sync, Progress: progress, Publisher: publisher, Poison: poison, AdoptUnowned: adopt, BatchUpdates: ec.BatchUpdates,
		CacheRepos: ec.CacheRepos, CacheRecords: ec.CacheRecords, HeldPerRepo: ec.HeldPerRepo, ResyncConcurrency: ec.ResyncConcurrency,
		ResyncRate: ec.ResyncRate, ResyncAttempts: ec.ResyncAttempts, FlushEvery: ec.FlushEvery,
		RevFlushAfter: ec.RevFlushAfter, Logger: c.log, Metrics: c.pm, OnRebuilt: func() {
			c.mu.Lock()
			c.rebuilt++
			c.mu.Unlock()
		}, OnStale: c.source.SetStale})
	if err != nil {
		return nil, err
	}
	filter := ec.Rules.MatchPath
	if (ec.Rules.PublishAllCollections || ec.PublishAllCollections) && c.pub != nil {
		filter = nil // raw mode: every op is decoded and published
	}
	sc := c.cfg.Stream
	var handler firehose.Handler = r.engine
	if c.cfg.Identity != nil && c.verifier == nil {
		// (A verifier purges the identity itself, in the DID's lane.)
		handler = forgetting{Handler: r.engine, id: c.cfg.Identity}
	}
	var verifier firehose.CommitVerifier
	var verifyAlso func(string) bool
	if c.verifier != nil {
		verifier, verifyAlso = c.verifier, r.engine.Tracks
	}
	r.stream, err = firehose.New(firehose.Config{URL: c.cfg.PDSURL, Tracker: progress.Tracker(), Handler: handler,
		Filter: filter, Workers: sc.Workers, QueueDepth: sc.QueueDepth, MaxFrameBytes: sc.MaxFrameBytes, Logger: c.log,
		Metrics: c.fhm, Source: c.source, OnFrame: c.cfg.Hooks.OnFrame, Verifier: verifier,
		VerifyAlso: verifyAlso})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// fetcher reads repos: from the PDS followed, or, behind a relay, from
// each account's own PDS.
func (c *Consumer) fetcher() (projector.Fetcher, error) {
	sc := firehose.SyncConfig{URL: c.cfg.PDSURL, Metrics: c.fhm,
		MaxRepoBytes: c.cfg.Stream.MaxRepoBytes, MaxRepoRecords: c.cfg.Stream.MaxRepoRecords}
	if c.verifier != nil {
		sc.VerifyKey, sc.PurgeKey = c.verifier.SigningKey, c.verifier.PurgeKey
	}
	own, err := firehose.NewSyncClient(sc)
	if err != nil || c.cfg.Relay == nil {
		return own, err
	}
	rc := c.cfg.Relay
	dir := rc.CollectionDir
	if dir == "" {
		dir = c.cfg.PDSURL
	}
	return firehose.NewRouter(firehose.RouterConfig{Resolver: c.cfg.Identity, Sync: sc,
		HostConcurrency: rc.HostConcurrency, HostRate: rc.HostRate, AllowPrivate: rc.AllowPrivateHosts,
		Lister: &firehose.CollectionLister{URL: dir, Collections: c.cfg.Engine.Rules.Collections(),
			Fallback: own, Logger: c.log}, Logger: c.log})
}

// forgetting drops an account's cached identity when the stream says it
// changed, before the account's later events are applied: a resync after
// a migration reads the repo from the new PDS.
type forgetting struct {
	firehose.Handler
	id Identity
}

func (f forgetting) HandleEvent(ctx context.Context, ev *firehose.Event) error {
	if ev.Kind == firehose.KindIdentity {
		_ = f.id.PurgeDID(ctx, ev.DID) // a purge of a cache fails only on a malformed DID
	}
	return f.Handler.HandleEvent(ctx, ev)
}

// onlySource reports whether this projector is the only source that ever
// stored a cursor in this SpiceDB: then repos stored before ownership
// existed are its own (projector.Config.AdoptUnowned).
func (c *Consumer) onlySource(ctx context.Context) (bool, error) {
	sources, err := c.client.Sources(ctx)
	if err != nil {
		return false, err
	}
	for _, s := range sources {
		if s != c.cfg.Lease.Name {
			return false, nil
		}
	}
	return true, nil
}

// requestRebuild asks the engine for a rebuild and, in g, follows it to
// its end. A live start rebuilds every repo, and only once the stream is
// connected, so that every change is in a snapshot or on the stream.
func (c *Consumer) requestRebuild(ctx context.Context, g *errgroup.Group, r *run, reason string, live bool) error {
	dids := c.cfg.Rebuild.DIDs
	if live {
		select {
		case <-r.stream.Ready():
		case <-ctx.Done():
			return ctx.Err()
		}
		dids = nil // without a cursor only a full rebuild makes a view to follow the stream from
	}
	if c.cfg.Hooks.BeforeRebuild != nil {
		c.cfg.Hooks.BeforeRebuild(ctx)
	}
	var done <-chan struct{}
	var err error
	if live {
		done, err = r.engine.RebuildIncompleteView(ctx, reason)
	} else {
		done, err = r.engine.Rebuild(ctx, reason, dids)
	}
	if err != nil {
		return err
	}
	c.setState(StateRebuilding, nil)
	g.Go(func() error {
		select {
		case <-done:
			c.setState(StateRunning, nil)
			c.log.Info("rebuild committed")
			if c.cfg.Rebuild.ExitWhenDone {
				return errRebuilt
			}
		case <-ctx.Done():
		}
		return nil
	})
	return nil
}

// errRebuilt stops the pipeline after a rebuild with ExitWhenDone.
var errRebuilt = errors.New("rebuild done")

// current is the current run (nil before the first).
func (c *Consumer) current() *run {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.run
}

// Snapshot reports the consumer's state.
func (c *Consumer) Snapshot() Snapshot {
	c.mu.Lock()
	s := Snapshot{State: c.state, Fenced: c.fenced, Holder: c.cfg.Lease.Holder, Name: c.cfg.Lease.Name,
		Restarts: c.restarts, Rebuilt: c.rebuilt, Started: c.started, Watermark: checkpoint.None,
		Highest: checkpoint.None, Cursor: checkpoint.None}
	if c.lastErr != nil {
		s.LastError = c.lastErr.Error()
	}
	r := c.run
	c.mu.Unlock()
	lag := c.source.Lag()
	s.Head, s.LagEvents, s.LagSeconds = lag.Head, lag.Events, lag.Seconds
	if r == nil {
		return s
	}
	t := r.progress.Tracker()
	s.Watermark, s.Highest, s.InFlight = t.Watermark(), t.Highest(), t.InFlight()
	s.Cursor = r.progress.Stored().Cursor
	s.Connected, _ = r.stream.Connected()
	s.Engine = r.engine.Status()
	return s
}

// lastEventTime is when the newest event was read (zero before any).
// It is the Source's, kept across runs: a new run that has nothing to
// replay has read nothing yet, which is not a silent PDS.
func (c *Consumer) lastEventTime() time.Time {
	return c.source.LastFrame()
}

// Engine is the current engine (nil before the first start).
func (c *Consumer) Engine() *projector.Engine {
	if r := c.current(); r != nil {
		return r.engine
	}
	return nil
}

// WaitApplied waits for a repo rev to be applied (DESIGN §7).
func (c *Consumer) WaitApplied(ctx context.Context, did, rev string) (string, error) {
	for {
		if e := c.Engine(); e != nil {
			return e.WaitApplied(ctx, did, rev)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Resync asks the running engine to resync repos from snapshots and waits
// until the writes are committed (the admin endpoint and reconcile --fix).
// A run that ends meanwhile (a restart: another source took a repo over,
// a transient failure) takes the request with it, so it is asked again of
// the next run.
func (c *Consumer) Resync(ctx context.Context, dids []string) error {
	e := c.Engine()
	if e == nil {
		return errors.New("pipeline: the consumer is not running yet")
	}
	for {
		done, err := e.Rebuild(ctx, "resync requested", dids)
		if err != nil {
			return err
		}
		tick := time.NewTicker(100 * time.Millisecond)
	wait:
		for {
			select {
			case <-done:
				tick.Stop()
				return nil
			case <-ctx.Done():
				tick.Stop()
				return ctx.Err()
			case <-tick.C:
				if next := c.Engine(); next != nil && next != e {
					e = next
					break wait
				}
			}
		}
		tick.Stop()
	}
}
