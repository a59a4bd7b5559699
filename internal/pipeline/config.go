package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// DefaultName is the projector name when none is given.
const DefaultName = "default"

// Config of a consumer. Every zero value takes the default of the package
// that owns the setting.
type Config struct {
	// PDSURL is the host whose stream is followed (required): a PDS (its
	// getRepo and listRepos too), or a relay when Relay is set.
	PDSURL string
	// Identity resolves accounts' DID documents: their PDS behind a relay,
	// their signing keys for VerifyCommits. Required with either; the
	// account's cached identity is purged when the stream carries an
	// #identity event for it.
	Identity Identity
	// VerifyCommits checks each commit that touches a projected record
	// against the account's current signing key (and the sync 1.1 chain
	// where present), and each getRepo snapshot's signed commit; a commit
	// that fails is not applied and its repo is resynced (DESIGN §11).
	VerifyCommits bool
	// Relay says PDSURL is a relay: an intermediary for many PDSes. Repos
	// are then read from each account's own PDS, found through its DID
	// document (nil: PDSURL is a PDS).
	Relay *RelayConfig
	// SpiceDB connection (required).
	SpiceDB spice.Config
	// Lease names the projector in SpiceDB and says how this process holds
	// it.
	Lease LeaseConfig
	// Stream tunes the firehose client.
	Stream StreamConfig
	// Engine tunes the projector.
	Engine EngineConfig
	// Rebuild at start (`consumer rebuild`, reconcile --fix without a
	// daemon).
	Rebuild RebuildConfig
	// NATS turns the fan-out on (nil: off). Its Source defaults to the PDS
	// host.
	NATS *fanout.Config
	// ReconcileEvery: compare every repo with SpiceDB this often, one at a
	// time, and resync the ones that drift (0: off).
	ReconcileEvery time.Duration
	// NoAutoRebuild: when SpiceDB turns out reset under a running consumer,
	// exit with an error instead of rebuilding.
	NoAutoRebuild bool
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Registry for metrics (default a private registry).
	Registry prometheus.Registerer
	// Hooks for tools and tests (optional).
	Hooks Hooks
}

// RelayConfig is how a consumer that follows a relay reads repos.
type RelayConfig struct {
	// CollectionDir serves com.atproto.sync.listReposByCollection for
	// rebuilds (default: the relay itself; where neither serves it, a
	// rebuild lists every repo of the relay and says so).
	CollectionDir string
	// HostConcurrency and HostRate bound getRepo calls per PDS host (see
	// firehose.RouterConfig).
	HostConcurrency int
	HostRate        float64
	// AllowPrivateHosts lets DID documents name loopback, private and
	// plain-http PDSes (tests, private networks).
	AllowPrivateHosts bool
}

// Identity is what a consumer needs of the identity directory
// (*ident.Directory is one).
type Identity interface {
	identity.Directory
	firehose.Resolver
	// PurgeDID drops what is cached of did (an #identity event).
	PurgeDID(ctx context.Context, did string) error
}

// LeaseConfig names the projector and says how the lease is held.
type LeaseConfig struct {
	// Name of the projector in SpiceDB (default "default"): one per PDS.
	Name string
	// Holder names this process in the lease (default "c"). A random
	// suffix is always added: two processes never share a holder ID, even
	// when given the same name.
	Holder string
	// Timeout after which a silent holder loses the lease (default
	// spice.DefaultLeaseTimeout).
	Timeout time.Duration
	// HeartbeatEvery (default spice.DefaultHeartbeatEvery).
	HeartbeatEvery time.Duration
	// Takeover takes the lease even from a live holder (it is fenced).
	Takeover bool
	// NoWait fails at once when another consumer holds the lease.
	NoWait bool
}

// StreamConfig tunes the firehose client (see firehose.Config).
type StreamConfig struct {
	Workers, QueueDepth, MaxFrameBytes int
	// MaxInFlight bounds events read and not yet applied (see
	// checkpoint.Config).
	MaxInFlight int
	// MaxInFlightBytes bounds the frame bytes of those events (default
	// checkpoint.DefaultMaxInFlightBytes).
	MaxInFlightBytes int64
	// MaxRepoBytes bounds one getRepo CAR; a larger repo is refused and
	// desynchronized (see firehose.SyncConfig).
	MaxRepoBytes int64
	// MaxRepoRecords bounds the projected records one getRepo snapshot
	// keeps; a repo with more is refused like one over MaxRepoBytes.
	MaxRepoRecords int
}

// EngineConfig tunes the projector (see projector.Config).
type EngineConfig struct {
	// Rules (default: the embedded defaults).
	Rules                                                    *view.Rules
	BatchUpdates, CacheRepos, HeldPerRepo, ResyncConcurrency int
	// CacheRecords bounds the records of the cached lineage.
	CacheRecords int
	// ResyncRate bounds getRepo calls per second (0: unlimited).
	ResyncRate float64
	// ResyncAttempts: getRepo tries before a resync fails and its repo is
	// marked desynchronized (retried with backoff from then on).
	ResyncAttempts int
	FlushEvery     time.Duration
	// RevFlushAfter bounds how long a deferred rev stays unstored (see
	// projector.Config.RevFlushAfter).
	RevFlushAfter time.Duration
	// PublishAllCollections publishes every record op of every collection
	// (raw mode); the rules file can turn it on too.
	PublishAllCollections bool
}

// RebuildConfig asks for a rebuild at start.
type RebuildConfig struct {
	// AtStart resyncs every repo from snapshots when the consumer starts,
	// or only DIDs when set (a first run always rebuilds every repo).
	AtStart bool
	DIDs    []string
	// ExitWhenDone stops the consumer once the rebuild is committed.
	ExitWhenDone bool
}

// Hooks let tools and tests watch the pipeline.
type Hooks struct {
	// OnFrame sees raw frames (captures).
	OnFrame func([]byte)
	// BeforeRebuild runs after the live connection is up and before a first
	// run's rebuild is requested.
	BeforeRebuild func(context.Context)
}

// NewHolderID returns a random lease holder ID.
func NewHolderID() string { return uniqueHolder("") }

// uniqueHolder is name (default "c") with a random suffix, so that each
// process holds the lease under its own ID: AcquireLease treats a stored
// holder equal to its own as "already mine".
func uniqueHolder(name string) string {
	if name == "" {
		name = "c"
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return name + "-" + hex.EncodeToString(b)
}

func (c *Config) defaults() error {
	if c.PDSURL == "" {
		return errors.New("pipeline: PDS URL is required")
	}
	// Checked here, not first when the stream starts: that is after the
	// lease is taken, which a corrected restart would then wait out.
	if _, err := firehose.StreamURL(c.PDSURL, -1); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	if (c.Relay != nil || c.VerifyCommits) && c.Identity == nil {
		return errors.New("pipeline: a relay source and verified commits need an identity directory")
	}
	if c.Lease.Name == "" {
		c.Lease.Name = DefaultName
	}
	if !spice.ValidName(c.Lease.Name) {
		return fmt.Errorf("pipeline: projector name %q: use letters, digits, _ and -", c.Lease.Name)
	}
	c.Lease.Holder = uniqueHolder(c.Lease.Holder)
	if !spice.ValidName(c.Lease.Holder) {
		return fmt.Errorf("pipeline: holder %q: use letters, digits, _ and -", c.Lease.Holder)
	}
	if c.Engine.Rules == nil {
		c.Engine.Rules = view.DefaultRules()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return c.SpiceDB.Validate()
}

// leaseConfig is the spice lease configuration of this consumer.
func (c *Consumer) leaseConfig(wait bool) spice.LeaseConfig {
	l := c.cfg.Lease
	return spice.LeaseConfig{Client: c.client, Name: l.Name, Holder: l.Holder, Timeout: l.Timeout,
		Takeover: l.Takeover, Wait: wait, Logger: c.log, Metrics: c.sm}
}
