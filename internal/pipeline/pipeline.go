// Package pipeline wires the consumer's packages into the running daemon:
// SpiceDB client and lease, the projector engine, the firehose client and
// (optionally) the fan-out, under one errgroup. cmd/consumer and the
// in-process tests use it; it holds no logic of its own beyond the order in
// which things start and the restart after a refused relationship.
package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/projector"
	"github.com/spaces-authz/spaces-authz/spice"
)

// Config of a consumer.
type Config struct {
	// PDSURL is the PDS to follow (required).
	PDSURL string
	// Name of the projector in SpiceDB (default "default"): one per PDS.
	Name string
	// Holder is this process's lease ID (default random).
	Holder string
	// Rules (default: the embedded defaults).
	Rules *projector.Rules
	// SpiceDB connection (required).
	SpiceDB spice.Config
	// LeaseTimeout and Takeover: see spice.LeaseConfig.
	LeaseTimeout time.Duration
	Takeover     bool
	// HeartbeatEvery (default 5s).
	HeartbeatEvery time.Duration
	// NoAutoRebuild: when SpiceDB turns out reset under a running consumer,
	// exit with an error instead of rebuilding.
	NoAutoRebuild bool
	// Stream tuning (zero values take the firehose defaults).
	Workers, QueueDepth, MaxFrameBytes, MaxInFlight int
	// Engine tuning (zero values take the projector defaults).
	BatchUpdates, CacheRepos, HeldPerRepo, ResyncConcurrency int
	FlushEvery                                               time.Duration
	// ResyncRate bounds getRepo calls per second (0: unlimited).
	ResyncRate float64
	// Rebuild resyncs every repo from snapshots at start (consumer rebuild),
	// or only RebuildDIDs when set; ExitAfterRebuild then stops the
	// consumer once it is committed.
	Rebuild, ExitAfterRebuild bool
	RebuildDIDs               []string
	// NoWait fails at once when another consumer holds the lease.
	NoWait bool
	// ReconcileEvery: compare every repo with SpiceDB this often, one at a
	// time, and resync the ones that drift (0: off).
	ReconcileEvery time.Duration
	// NATS turns the fan-out on (nil: off). Source defaults to the PDS host.
	NATS *fanout.Config
	// PublishAllCollections publishes every record op of every collection
	// (raw mode); the rules file can turn it on too.
	PublishAllCollections bool
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Registry for metrics (default a private registry).
	Registry prometheus.Registerer
	// OnFrame sees raw frames (captures); optional.
	OnFrame func([]byte)
	// BeforeRebuild, a test hook, runs after the live connection is up and
	// before a first run's rebuild is requested.
	BeforeRebuild func(context.Context)
}

// DefaultName is the projector name when none is given.
const DefaultName = "default"

// NewHolderID returns a random lease holder ID.
func NewHolderID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "c-" + hex.EncodeToString(b)
}

func (c *Config) defaults() error {
	if c.PDSURL == "" {
		return errors.New("pipeline: PDS URL is required")
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if !spice.ValidName(c.Name) {
		return fmt.Errorf("pipeline: projector name %q: use letters, digits, _ and -", c.Name)
	}
	if c.Holder == "" {
		c.Holder = NewHolderID()
	}
	if c.Rules == nil {
		c.Rules = projector.DefaultRules()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return c.SpiceDB.Validate()
}

// Consumer is a running (or starting) daemon; its accessors serve the HTTP
// endpoints and `status`.
type Consumer struct {
	cfg      Config
	log      *slog.Logger
	client   *spice.Client
	fhm      *firehose.Metrics
	pm       *projector.Metrics
	sm       *spice.Metrics
	nm       *fanout.Metrics
	pub      *fanout.Publisher
	mu       sync.Mutex
	engine   *projector.Engine
	stream   *firehose.Client
	tracker  *firehose.Tracker
	writer   *spice.Writer
	state    string
	lastErr  error
	fenced   bool
	started  time.Time
	restarts int
	rebuilt  int
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
		pm: projector.NewMetrics(cfg.Registry), sm: spice.NewMetrics(cfg.Registry), state: "starting",
		started: time.Now()}
	if cfg.NATS != nil {
		c.nm = fanout.NewMetrics(cfg.Registry)
	}
	cfg.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "consumer", Name: "lag_events",
			Help: "Events read from the stream and not yet applied (head seq minus watermark)."},
			func() float64 {
				s := c.Snapshot()
				if s.Watermark < 0 || s.Highest < s.Watermark {
					return 0
				}
				return float64(s.Highest - s.Watermark)
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "consumer", Name: "lag_seconds",
			Help: "How far the newest applied event's time is behind the newest event read (0 when caught up)."},
			func() float64 { return c.Snapshot().LagSeconds }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "consumer", Name: "ready",
			Help: "1 when connected to the PDS, holding the lease, and not failed."},
			func() float64 {
				if c.Snapshot().Ready() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "consumer", Name: "last_event_age_seconds",
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
	pub, err := fanout.Connect(ctx, nc)
	if err != nil {
		return err
	}
	c.pub = pub
	c.log.Info("fan-out to NATS JetStream on", "url", nc.URL, "stream", pub.Stream(), "source", nc.Source)
	return nil
}

// SpiceDB is the consumer's SpiceDB client.
func (c *Consumer) SpiceDB() *spice.Client { return c.client }

// CheckSchema fails with spice.ErrSchema when SpiceDB's schema lacks the
// projector's definitions.
func (c *Consumer) CheckSchema(ctx context.Context) error {
	s, err := c.client.ReadSchema(ctx)
	if err != nil {
		return err
	}
	for _, def := range []string{projector.TypeProjector, projector.TypeLineage, projector.TypeRepo, projector.TypeSpace} {
		if !strings.Contains(s, "definition "+def+" ") {
			return fmt.Errorf("%w: definition %q is missing", spice.ErrSchema, def)
		}
	}
	return nil
}

func (c *Consumer) setState(s string, err error) {
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

// Run follows the stream until ctx ends (nil) or a fatal error. It takes the
// lease (waiting while another consumer holds it), and restarts the
// pipeline from the stored cursor after SpiceDB refused a relationship.
func (c *Consumer) Run(ctx context.Context) error {
	if err := c.CheckSchema(ctx); err != nil {
		c.setState("failed", err)
		return err
	}
	if err := c.connectNATS(ctx); err != nil {
		c.setState("failed", err)
		return err
	}
	c.setState("waiting for lease", nil)
	lease, err := spice.AcquireLease(ctx, spice.LeaseConfig{Client: c.client, Name: c.cfg.Name, Holder: c.cfg.Holder,
		Timeout: c.cfg.LeaseTimeout, Takeover: c.cfg.Takeover, Wait: !c.cfg.NoWait, Logger: c.log, Metrics: c.sm})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		c.setState("failed", err)
		return err
	}
	poison := projector.NewPoison()
	rebuild := c.cfg.Rebuild
	for {
		err := c.runOnce(ctx, lease, poison, rebuild)
		rebuild = false
		switch {
		case errors.Is(err, spice.ErrReset) && !c.cfg.NoAutoRebuild:
			c.log.Error("SpiceDB was reset under the consumer (lease and cursor are gone): rebuilding the view from repo snapshots")
			c.setState("rebuilding after a SpiceDB reset", err)
			if lease, err = c.reacquire(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				c.setState("failed", err)
				return err
			}
			continue
		case errors.Is(err, spice.ErrReset):
			err = fmt.Errorf("%w; not rebuilding (--no-auto-rebuild): check SpiceDB, then run `consumer rebuild`", err)
			c.setState("failed", err)
			return err
		case errors.Is(err, projector.ErrRestart):
			c.pm.Restarted()
			c.mu.Lock()
			c.restarts++
			c.mu.Unlock()
			c.log.Warn("restarting the pipeline from the stored cursor", "poisoned", poison.Len())
			lease, err = c.client.ReadProjector(ctx, c.cfg.Name)
			if err != nil {
				return err
			}
			if lease.Holder != c.cfg.Holder {
				return fmt.Errorf("%w (holder now %q)", spice.ErrFenced, lease.Holder)
			}
			continue
		case err == nil || ctx.Err() != nil:
			c.setState("stopped", nil)
			c.release()
			return nil
		default:
			c.setState("failed", err)
			if errors.Is(err, spice.ErrFenced) {
				c.sm.SetLeaseState(spice.LeaseFenced)
			}
			return err
		}
	}
}

// reacquire waits for SpiceDB's schema to be back after a reset and takes
// the (now empty) lease again.
func (c *Consumer) reacquire(ctx context.Context) (spice.ProjectorState, error) {
	for {
		err := c.CheckSchema(ctx)
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
	return spice.AcquireLease(ctx, spice.LeaseConfig{Client: c.client, Name: c.cfg.Name, Holder: c.cfg.Holder,
		Timeout: c.cfg.LeaseTimeout, Takeover: c.cfg.Takeover, Wait: true, Logger: c.log, Metrics: c.sm})
}

func (c *Consumer) release() {
	c.mu.Lock()
	w := c.writer
	c.mu.Unlock()
	if w == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Release(ctx); err != nil {
		c.log.Warn("could not release the lease; the next consumer waits for it to go stale", "err", err)
	}
}

func (c *Consumer) runOnce(ctx context.Context, lease spice.ProjectorState, poison *projector.Poison, rebuild bool) error {
	cursor := lease.Cursor
	reason := "consumer rebuild"
	if cursor == spice.NoSeq {
		// First run (or SpiceDB reset): follow the stream live from the
		// first event of this connection and build the view from repo
		// snapshots meanwhile (DESIGN §5).
		cursor = firehose.NoCursor
		rebuild, reason = true, "first run: no cursor stored"
	}
	tracker := firehose.NewTracker(cursor, c.cfg.MaxInFlight)
	writer := spice.NewWriter(spice.WriterConfig{Client: c.client, Name: c.cfg.Name, Holder: c.cfg.Holder, Lease: lease,
		HeartbeatEvery: c.cfg.HeartbeatEvery, Logger: c.log, Metrics: c.sm})
	sync, err := firehose.NewSyncClient(firehose.SyncConfig{URL: c.cfg.PDSURL, Metrics: c.fhm})
	if err != nil {
		return err
	}
	var publisher projector.Publisher
	if c.pub != nil {
		publisher = c.pub
	}
	engine, err := projector.New(projector.Config{Rules: c.cfg.Rules, Store: spice.NewStore(c.client), Writer: writer,
		Fetcher: sync, Tracker: tracker, Publisher: publisher, Poison: poison, RewindSeq: lease.Rewind,
		BatchUpdates: c.cfg.BatchUpdates, CacheRepos: c.cfg.CacheRepos, HeldPerRepo: c.cfg.HeldPerRepo,
		ResyncConcurrency: c.cfg.ResyncConcurrency, FlushEvery: c.cfg.FlushEvery, Logger: c.log, Metrics: c.pm,
		ResyncRate: c.cfg.ResyncRate, ProjectorName: c.cfg.Name, ResumeRebuild: lease.Rebuild != spice.NoSeq,
		RebuildMarker: lease.Rebuild, AwaitRebuild: cursor == firehose.NoCursor, OnRebuilt: func() {
			c.mu.Lock()
			c.rebuilt++
			c.mu.Unlock()
		}})
	if err != nil {
		return err
	}
	if err := engine.Load(ctx); err != nil {
		return err
	}
	filter := c.cfg.Rules.MatchPath
	if (c.cfg.Rules.PublishAllCollections || c.cfg.PublishAllCollections) && c.pub != nil {
		filter = nil // raw mode: every op is decoded and published
	}
	stream, err := firehose.New(firehose.Config{URL: c.cfg.PDSURL, Tracker: tracker, Handler: engine, Filter: filter,
		Workers: c.cfg.Workers, QueueDepth: c.cfg.QueueDepth, MaxFrameBytes: c.cfg.MaxFrameBytes, Logger: c.log,
		Metrics: c.fhm, OnFrame: c.cfg.OnFrame})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.engine, c.stream, c.tracker, c.writer = engine, stream, tracker, writer
	c.mu.Unlock()
	c.setState("running", nil)
	c.log.Info("consumer running", "projector", c.cfg.Name, "holder", c.cfg.Holder, "cursor", cursor,
		"pds", c.cfg.PDSURL)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return engine.Run(gctx) })
	g.Go(func() error { return stream.Run(gctx) })
	if c.pub != nil {
		g.Go(func() error { return c.pub.Run(gctx) })
	}
	if c.cfg.ReconcileEvery > 0 {
		g.Go(func() error { return c.reconcileLoop(gctx, engine, sync) })
	}
	if rebuild {
		if cursor == firehose.NoCursor {
			// Snapshots must be taken after the live connection is up, so
			// that every change is in a snapshot or on the stream.
			select {
			case <-stream.Ready():
			case <-gctx.Done():
				return g.Wait()
			}
		}
		if c.cfg.BeforeRebuild != nil {
			c.cfg.BeforeRebuild(gctx)
		}
		dids := c.cfg.RebuildDIDs
		if cursor == firehose.NoCursor {
			dids = nil // without a cursor only a full rebuild makes a view to follow the stream from
		}
		done, err := engine.Rebuild(gctx, reason, dids)
		if err != nil {
			return g.Wait()
		}
		c.setState("running (rebuilding)", nil)
		g.Go(func() error {
			select {
			case <-done:
				c.setState("running", nil)
				c.log.Info("rebuild committed")
				if c.cfg.ExitAfterRebuild {
					return errRebuilt
				}
			case <-gctx.Done():
			}
			return nil
		})
	}
	err = g.Wait()
	if errors.Is(err, errRebuilt) {
		return nil
	}
	return err
}

// errRebuilt stops the pipeline after a rebuild with ExitAfterRebuild.
var errRebuilt = errors.New("rebuild done")

// Snapshot is the consumer's state for status and health endpoints.
type Snapshot struct {
	State     string
	LastError string
	Fenced    bool
	Connected bool
	Watermark int64
	Highest   int64
	InFlight  int
	Cursor    int64
	Engine    projector.Status
	Holder    string
	Name      string
	Restarts  int
	// Rebuilt counts the rebuilds committed.
	Rebuilt int
	Started time.Time
	// LagSeconds is how far behind the newest event read the newest
	// applied one is, by their `time` fields (0 when nothing is pending).
	LagSeconds float64
}

// Snapshot reports the consumer's state.
func (c *Consumer) Snapshot() Snapshot {
	c.mu.Lock()
	s := Snapshot{State: c.state, Fenced: c.fenced, Holder: c.cfg.Holder, Name: c.cfg.Name, Restarts: c.restarts,
		Rebuilt: c.rebuilt,
		Started: c.started, Watermark: firehose.NoCursor, Highest: firehose.NoCursor, Cursor: spice.NoSeq}
	if c.lastErr != nil {
		s.LastError = c.lastErr.Error()
	}
	engine, stream, tracker, writer := c.engine, c.stream, c.tracker, c.writer
	c.mu.Unlock()
	if tracker != nil {
		s.Watermark, s.Highest, s.InFlight = tracker.Watermark(), tracker.Highest(), tracker.InFlight()
	}
	if stream != nil {
		s.Connected, _ = stream.Connected()
	}
	if writer != nil {
		s.Cursor = writer.Cursor()
	}
	if engine != nil {
		s.Engine = engine.Status()
	}
	if s.InFlight > 0 && stream != nil && !s.Engine.AppliedEventTime.IsZero() {
		if head, ok := stream.HeadTime(); ok && head.After(s.Engine.AppliedEventTime) {
			s.LagSeconds = head.Sub(s.Engine.AppliedEventTime).Seconds()
		}
	}
	return s
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

// Ready reports connected to the PDS, running (holding the lease), not
// fenced or failed.
func (s Snapshot) Ready() bool { return s.NotReadyReason() == "" }

// NotReadyReason says why the consumer is not ready ("" when it is).
func (s Snapshot) NotReadyReason() string {
	switch {
	case s.Fenced:
		return "fenced: another consumer holds the lease"
	case !strings.HasPrefix(s.State, "running"):
		return s.State
	case !s.Connected:
		return "not connected to the PDS stream"
	}
	return ""
}

// lastEventTime is when the newest event was read (zero before any).
func (c *Consumer) lastEventTime() time.Time {
	c.mu.Lock()
	stream := c.stream
	c.mu.Unlock()
	if stream == nil {
		return time.Time{}
	}
	return stream.LastRead()
}

// Engine is the current engine (nil before the first start).
func (c *Consumer) Engine() *projector.Engine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.engine
}

// reconcileLoop compares every repo with SpiceDB every ReconcileEvery, one
// account at a time, and resyncs the repos that drift.
func (c *Consumer) reconcileLoop(ctx context.Context, engine *projector.Engine, fetcher *firehose.SyncClient) error {
	r := &projector.Reconciler{Rules: c.cfg.Rules, Store: spice.NewStore(c.client), Fetcher: fetcher}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.cfg.ReconcileEvery):
		}
		dids, err := r.Repos(ctx)
		if err != nil {
			c.log.Warn("reconcile: listing repos failed", "err", err)
			continue
		}
		drifting := 0
		for _, did := range dids {
			rep, err := r.Check(ctx, did)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				c.log.Warn("reconcile: check failed", "did", did, "err", err)
				continue
			}
			c.pm.Reconciled(rep.Drift)
			if len(rep.Drift) == 0 {
				continue
			}
			drifting++
			c.log.Warn("reconcile: repo drifted from its records; resyncing it", "did", did, "drift", len(rep.Drift),
				"first", rep.Drift[0].Kind+" "+rep.Drift[0].Relationship)
			if _, err := engine.Rebuild(ctx, "reconcile", []string{did}); err != nil {
				return nil
			}
		}
		c.log.Info("reconcile pass done", "repos", len(dids), "drifting", drifting)
	}
}

// Resync asks the running engine to resync repos from snapshots and waits
// until the writes are committed (the admin endpoint and reconcile --fix).
func (c *Consumer) Resync(ctx context.Context, dids []string) error {
	e := c.Engine()
	if e == nil {
		return errors.New("pipeline: the consumer is not running yet")
	}
	done, err := e.Rebuild(ctx, "resync requested", dids)
	if err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
