package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/redact"
	"github.com/spaces-authz/spaces-authz/projector"
	"github.com/spaces-authz/spaces-authz/spice"
)

type runFlags struct {
	common
	httpAddr                                   string
	admin                                      adminFlags
	maxConsistencyWaiters                      int
	serviceDID                                 string
	accountResyncEvery                         time.Duration
	accountResyncBurst, maxAccountResyncs      int
	holder                                     string
	leaseTimeout, heartbeatEvery, flushEvery   time.Duration
	revFlushAfter                              time.Duration
	takeover, noAutoRebuild                    bool
	workers, queueDepth, maxInFlight, maxFrame int
	maxRepoBytes, maxInFlightBytes             int64
	maxRepoRecords                             int
	batchUpdates, cacheRepos, heldPerRepo      int
	cacheRecords                               int
	resyncConcurrency                          int
	resyncRate                                 float64
	hostConcurrency                            int
	hostRate                                   float64
	collectionDir                              string
	verifyCommits                              string
	reconcileEvery                             time.Duration
	nats                                       natsFlags
	publishAll                                 bool
	natsMaxAge                                 time.Duration
}

func (f *runFlags) register(fs *flag.FlagSet) {
	f.common.register(fs, "json")
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:9464",
		"address of /metrics, /healthz, /readyz, /v1/status, /v1/consistency (and /v1/admin/* unless --admin-addr)")
	f.admin.register(fs, "serve the admin API (/v1/admin/*, bearer token) on this address alone, e.g. 127.0.0.1:9465 "+
		"(default: on --http-addr)")
	fs.IntVar(&f.maxConsistencyWaiters, "max-consistency-waiters", httpapi.DefaultMaxConsistencyWaiters,
		"/v1/consistency requests waiting at once, at most; more get 429")
	fs.StringVar(&f.serviceDID, "service-did", "",
		"this consumer's service DID, the aud of the service-auth tokens accounts send to "+httpapi.ResyncAccountNSID+
			" to resync themselves (empty: that method answers 501)")
	durationFlag(fs, &f.accountResyncEvery, "account-resync-every", httpapi.DefaultAccountResyncEvery,
		"how often, on average, one account may resync itself with "+httpapi.ResyncAccountNSID)
	fs.IntVar(&f.accountResyncBurst, "account-resync-burst", httpapi.DefaultAccountResyncBurst,
		"resyncs in a row one account may ask for before --account-resync-every applies")
	fs.IntVar(&f.maxAccountResyncs, "max-account-resyncs", httpapi.DefaultMaxAccountResyncs,
		httpapi.ResyncAccountNSID+" requests in progress at once, at most; more get 429")
	fs.StringVar(&f.holder, "holder", "", "lease holder ID of this process (default: random per process)")
	durationFlag(fs, &f.leaseTimeout, "lease-timeout", spice.DefaultLeaseTimeout, "a holder silent this long loses the lease")
	durationFlag(fs, &f.heartbeatEvery, "heartbeat-every", spice.DefaultHeartbeatEvery, "how often the lease heartbeat is written")
	durationFlag(fs, &f.flushEvery, "flush-every", time.Second, "when idle, how often the cursor is written")
	durationFlag(fs, &f.revFlushAfter, "rev-flush-after", projector.DefaultRevFlushAfter,
		"how long a commit that changed no projected record may leave its repo's rev unstored (a crash replays at most this much; 0: write every commit's rev)")
	fs.BoolVar(&f.takeover, "takeover", false, "take the lease even from a live holder (it gets fenced)")
	fs.BoolVar(&f.noAutoRebuild, "no-auto-rebuild", false, "exit instead of rebuilding when SpiceDB was reset under the consumer")
	fs.IntVar(&f.workers, "workers", 4, "per-DID delivery lanes (parallelism across DIDs)")
	fs.IntVar(&f.queueDepth, "queue-depth", 64, "events queued per lane")
	fs.IntVar(&f.maxInFlight, "max-in-flight", 20000, "events read but not yet applied, at most")
	fs.Int64Var(&f.maxInFlightBytes, "max-in-flight-bytes", checkpoint.DefaultMaxInFlightBytes,
		"frame bytes of the events read but not yet applied, at most (bounds memory on streams of large commits)")
	fs.IntVar(&f.maxFrame, "max-frame-bytes", 8<<20, "frames larger than this are counted and skipped")
	fs.Int64Var(&f.maxRepoBytes, "max-repo-bytes", firehose.DefaultMaxRepoBytes,
		"getRepo CARs larger than this are refused (the repo is desynchronized and retried); spooled to $TMPDIR")
	fs.IntVar(&f.maxRepoRecords, "max-repo-records", firehose.DefaultMaxRepoRecords,
		"getRepo snapshots with more projected records than this are refused like too large repos (each is held in memory while the repo is diffed)")
	fs.IntVar(&f.batchUpdates, "batch-updates", projector.DefaultBatchUpdates, "relationship updates per SpiceDB write, at most")
	fs.IntVar(&f.cacheRepos, "cache-repos", 10000, "repos whose lineage is cached in memory")
	fs.IntVar(&f.cacheRecords, "cache-records", 0,
		"records whose lineage is cached in memory, over all cached repos (~500 bytes each; 0: no bound but --cache-repos)")
	fs.IntVar(&f.heldPerRepo, "held-per-repo", 1000, "live events held per repo while it resyncs")
	fs.IntVar(&f.resyncConcurrency, "resync-concurrency", 4, "concurrent getRepo calls")
	fs.Float64Var(&f.resyncRate, "resync-rate", 20, "getRepo calls per second at most, to be polite to the PDS (0: no limit)")
	fs.IntVar(&f.hostConcurrency, "repo-host-concurrency", firehose.DefaultHostConcurrency,
		"with --relay-url: concurrent getRepo calls to one PDS host, at most")
	fs.Float64Var(&f.hostRate, "repo-host-rate", firehose.DefaultHostRate,
		"with --relay-url: getRepo calls per second to one PDS host, at most")
	fs.StringVar(&f.verifyCommits, "verify-commits", "auto",
		"check each commit that touches a projected record, and each getRepo snapshot, against the account's signing key: "+
			"on, off, or auto (on with --relay-url: a relay is an intermediary; off with --pds-url: the PDS is the authority)")
	fs.StringVar(&f.collectionDir, "collection-dir", "",
		"with --relay-url: service answering com.atproto.sync.listReposByCollection for rebuilds, e.g. indigo's collectiondir "+
			"(default: the relay; where it is not served, a rebuild reads EVERY repo of the relay)")
	durationFlag(fs, &f.reconcileEvery, "reconcile-every", 0, "compare every repo with SpiceDB this often, one at a time, and resync drift (0: off)")
	f.nats.register(fs)
	fs.BoolVar(&f.publishAll, "publish-all-collections", false, "publish every record op of every collection to NATS (raw mode)")
	durationFlag(fs, &f.natsMaxAge, "nats-max-age", fanout.DefaultMaxAge, "how long JetStream keeps messages")
}

func (f *runFlags) pipelineConfig(reg prometheus.Registerer) (pipeline.Config, error) {
	if err := f.needPDS(); err != nil {
		return pipeline.Config{}, err
	}
	log, err := f.logger()
	if err != nil {
		return pipeline.Config{}, err
	}
	sc, err := f.spiceConfig()
	if err != nil {
		return pipeline.Config{}, err
	}
	rules, err := f.rules()
	if err != nil {
		return pipeline.Config{}, err
	}
	dir, err := f.identity(reg)
	if err != nil {
		return pipeline.Config{}, err
	}
	relay := f.relayConfig()
	if relay != nil {
		relay.CollectionDir, relay.HostConcurrency, relay.HostRate = f.collectionDir, f.hostConcurrency, f.hostRate
	}
	return pipeline.Config{PDSURL: f.streamURL(), Relay: relay, Identity: dir, VerifyCommits: f.verifying(), SpiceDB: sc,
		Lease: pipeline.LeaseConfig{Name: f.name, Holder: f.holder, Timeout: f.leaseTimeout,
			HeartbeatEvery: f.heartbeatEvery, Takeover: f.takeover},
		Stream: pipeline.StreamConfig{Workers: f.workers, QueueDepth: f.queueDepth, MaxFrameBytes: f.maxFrame,
			MaxInFlight: f.maxInFlight, MaxInFlightBytes: f.maxInFlightBytes, MaxRepoBytes: f.maxRepoBytes,
			MaxRepoRecords: f.maxRepoRecords},
		Engine: pipeline.EngineConfig{Rules: rules, BatchUpdates: f.batchUpdates, CacheRepos: f.cacheRepos, CacheRecords: f.cacheRecords,
			HeldPerRepo: f.heldPerRepo, ResyncConcurrency: f.resyncConcurrency, ResyncRate: f.resyncRate,
			FlushEvery: f.flushEvery, RevFlushAfter: revFlushAfter(f.revFlushAfter), PublishAllCollections: f.publishAll},
		NATS: f.nats.config(f.natsMaxAge), ReconcileEvery: f.reconcileEvery, NoAutoRebuild: f.noAutoRebuild,
		Logger: log, Registry: reg}, nil
}

// newRegistry is the process's one metrics registry: Go, process and
// build-info collectors plus whatever the packages register.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector())
	b := currentBuild()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "build_info",
		Help:        "Always 1; the labels say which build runs (the values `consumer version` prints).",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "goversion": b.GoVersion}},
		func() float64 { return 1 }))
	return reg
}

func cmdRun(ctx context.Context, args []string) error {
	var f runFlags
	return f.runDaemon(ctx, f.flagSet("run"), args, nil)
}

// cmdRebuild is `run` that first resyncs every repo from snapshots.
func cmdRebuild(ctx context.Context, args []string) error {
	var f runFlags
	fs := f.flagSet("rebuild")
	exit := fs.Bool("exit-when-done", false, "stop once the rebuild is committed instead of following the stream")
	return f.runDaemon(ctx, fs, args, func(cfg *pipeline.Config) {
		cfg.Rebuild = pipeline.RebuildConfig{AtStart: true, ExitWhenDone: *exit}
	})
}

// flagSet is a command's flag set with the daemon's flags registered.
func (f *runFlags) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	f.register(fs)
	return fs
}

// runDaemon parses args, builds the pipeline config (adjust, when set,
// changes it) and serves until ctx ends.
func (f *runFlags) runDaemon(ctx context.Context, fs *flag.FlagSet, args []string, adjust func(*pipeline.Config)) error {
	if err := parse(fs, args); err != nil {
		return err
	}
	// Everything is checked before SpiceDB is dialed or the lease taken.
	if err := f.validate(); err != nil {
		return err
	}
	reg := newRegistry()
	cfg, err := f.pipelineConfig(reg)
	if err != nil {
		return err
	}
	if adjust != nil {
		adjust(&cfg)
	}
	return serve(ctx, *f, cfg, reg)
}

// listeners binds the HTTP API: one listener, or two with --admin-addr
// (the main one then doesn't serve /v1/admin/*).
func (f *runFlags) listeners(src httpapi.Source, reg *prometheus.Registry, log *slog.Logger) ([]*httpapi.Server, string, error) {
	token, err := f.admin.token()
	if err != nil {
		return nil, "", err
	}
	cfg := httpapi.Config{Source: src, Gatherer: reg, AdminToken: token,
		MaxConsistencyWaiters: f.maxConsistencyWaiters, Metrics: httpapi.NewMetrics(reg),
		ServiceDID: f.serviceDID, AccountResyncEvery: f.accountResyncEvery, AccountResyncBurst: f.accountResyncBurst,
		MaxAccountResyncs: f.maxAccountResyncs, Logger: log}
	if f.serviceDID != "" {
		if cfg.Directory, err = f.identity(reg); err != nil {
			return nil, "", err
		}
	}
	api, err := httpapi.New(cfg)
	if err != nil {
		return nil, "", &exitError{code: 2, err: fmt.Errorf("--admin-token-file/%s, --max-consistency-waiters, "+
			"--service-did: %w", adminTokenEnv, err)}
	}
	if f.admin.addr == "" {
		srv, err := httpapi.Listen(f.httpAddr, api.Handler(), log)
		if err != nil {
			return nil, "", err
		}
		where := "disabled (set " + adminTokenEnv + " or --admin-token-file)"
		if api.AdminEnabled() {
			where = "on " + srv.Addr()
			if !spice.IsLoopback(srv.Addr()) {
				log.Warn("the admin API shares a non-loopback listener; consider --admin-addr 127.0.0.1:9465",
					"http", srv.Addr())
			}
		}
		return []*httpapi.Server{srv}, where, nil
	}
	srv, err := httpapi.Listen(f.httpAddr, api.PublicHandler(), log)
	if err != nil {
		return nil, "", err
	}
	adm, err := httpapi.Listen(f.admin.addr, api.AdminHandler(), log)
	if err != nil {
		_ = srv.Close()
		return nil, "", err
	}
	where := "on " + adm.Addr()
	if !api.AdminEnabled() {
		where += ", disabled (set " + adminTokenEnv + " or --admin-token-file)"
	}
	return []*httpapi.Server{srv, adm}, where, nil
}

// follower is a consumer of one stream or a group of them.
type follower interface {
	httpapi.Source
	Run(ctx context.Context) error
	Close() error
}

var (
	_ follower = (*pipeline.Consumer)(nil)
	_ follower = (*pipeline.Group)(nil)
)

func newDaemon(f runFlags, cfg pipeline.Config) (follower, error) {
	if urls := f.pdsURLs(); len(urls) > 1 {
		return pipeline.NewGroup(cfg, urls)
	}
	return pipeline.New(cfg)
}

func serve(ctx context.Context, f runFlags, cfg pipeline.Config, reg *prometheus.Registry) error {
	consumer, err := newDaemon(f, cfg)
	if err != nil {
		return err
	}
	defer consumer.Close()
	servers, admin, err := f.listeners(consumer, reg, cfg.Logger)
	if err != nil {
		return err
	}
	cfg.Logger.Info("consumer starting", "version", version, "commit", currentBuild().Commit,
		"stream", redact.URL(f.streamURL()), "relay", f.relayURL != "", "spicedb", f.spiceEndpoint,
		"projector", f.name, "http", servers[0].Addr(), "admin_api", admin, "resync_account", accountResyncState(f))
	g, gctx := errgroup.WithContext(ctx)
	runCtx, stopHTTP := context.WithCancel(context.Background())
	defer stopHTTP()
	for _, srv := range servers {
		g.Go(func() error { return srv.Run(runCtx) })
	}
	g.Go(func() error {
		defer stopHTTP()
		return consumer.Run(gctx)
	})
	// A person running `rebuild --exit-when-done` in a terminal sees a live
	// line of its progress; anywhere else the logs are all there is.
	var prog *progressLine
	if cfg.Rebuild.AtStart && cfg.Rebuild.ExitWhenDone {
		prog = newProgress(os.Stderr, stderrIsTerminal(), "rebuild")
	}
	rebuildProgress := func() (int, int) {
		e := consumer.Snapshot().Engine
		return e.RebuildDone, e.RebuildTotal
	}
	progCtx, stopProg := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchProgress(progCtx, prog, rebuildProgress)
	}()
	err = g.Wait()
	stopProg()
	<-watched
	if prog != nil {
		prog.Update(rebuildProgress())
		prog.Finish() // ends the line, before an error is printed too
	}
	if err != nil {
		return err
	}
	cfg.Logger.Info("consumer stopped")
	return nil
}

// revFlushAfter maps the flag to projector.Config.RevFlushAfter: 0 turns
// deferral off.
func revFlushAfter(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
