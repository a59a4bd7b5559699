package projector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/internal/obs"
	"github.com/spaces-authz/spaces-authz/view"
)

// Metrics of the projection. A nil *Metrics records nothing.
type Metrics struct {
	applied     *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	resyncs     *prometheus.CounterVec
	resyncFails prometheus.Counter
	duplicates  prometheus.Counter
	cycles      prometheus.Counter
	unreadable  prometheus.Counter
	cachedRepos prometheus.Gauge
	restarts    prometheus.Counter
	rbActive    prometheus.Gauge
	rbTotal     prometheus.Gauge
	rbDone      prometheus.Gauge
	rbRecords   prometheus.Counter
	rebuilds    prometheus.Counter
	reconciled  prometheus.Counter
	drift       *prometheus.CounterVec
	desynced    prometheus.Gauge
	claims      prometheus.Counter
	claimsStale prometheus.Counter
	deferred    prometheus.Counter
	revFlushes  prometheus.Counter
	heldRepos   prometheus.Gauge
}

// Resync triggers (the `trigger` label).
const (
	TriggerSync     = "sync"
	TriggerGap      = "gap"
	TriggerActivate = "activate"
	TriggerRewind   = "rewind"
	TriggerRebuild  = "rebuild"
	// TriggerUnreadable: a commit named a record block it did not carry (or
	// one that does not hash to its CID).
	TriggerUnreadable = "unreadable"
	// TriggerMalformed: a #commit had an op the client could not read whose
	// collection may be projected (firehose.Event.Malformed).
	TriggerMalformed = "malformed"
	// TriggerUnverified: the stream's verifier refused a #commit (bad
	// signature, CAR or commit chain: firehose.Event.Unverified).
	TriggerUnverified = "unverified"
	// TriggerClaim: an event of a repo another source owns came from this
	// source's stream: the repo may have moved here (a claim).
	TriggerClaim = "claim"
	// TriggerRetry: a desynchronized repo is tried again.
	TriggerRetry = "retry"
)

// NewMetrics registers the projection metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "events_applied_total",
			Help: "Stream events fully applied (committed to SpiceDB or needing no write), by kind."}, []string{"kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "rejected_records_total",
			Help: "Records rejected as bad input, by reason; whatever they produced before is removed."}, []string{"reason"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "resyncs_total",
			Help: "Repo resyncs from getRepo, by trigger."}, []string{"trigger"}),
		resyncFails: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "resync_failures_total",
			Help: "Resyncs given up after retries (the repo is reconciled later)."}),
		duplicates: obs.DuplicateEvents(reg).WithLabelValues(obs.StageProjection),
		cycles: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "parent_cycles_total",
			Help: "Parent relations that close a cycle in a repo's own space tree (checks fail closed)."}),
		unreadable: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "unreadable_snapshot_records_total",
			Help: "Records a getRepo snapshot names but whose block is missing or corrupt; what they produced is kept."}),
		cachedRepos: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "cached_repos",
			Help: "Repos whose lineage is cached in memory."}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "pipeline_restarts_total",
			Help: "Restarts of the pipeline from the stored cursor (after SpiceDB refused a relationship)."}),
	}
	m.rbActive = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "rebuild_active",
		Help: "1 while a rebuild from repo snapshots runs."})
	m.rbTotal = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "rebuild_repos",
		Help: "Repos the running rebuild resyncs."})
	m.rbDone = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "rebuild_repos_done",
		Help: "Repos the running rebuild has resynced."})
	m.rbRecords = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "rebuild_records_total",
		Help: "Records read from snapshots by rebuilds."})
	m.desynced = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "desynchronized_repos",
		Help: "Repos whose last resync failed: what SpiceDB holds for them may be wrong until a retry succeeds."})
	m.claims = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "repo_claims_total",
		Help: "Repos taken over from another source (or with no owner recorded) because this source's PDS serves them."})
	m.claimsStale = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "repo_claims_refused_total",
		Help: "Takeovers refused because this source's copy of the repo is not newer than the stored one (an old PDS of a migrated account)."})
	m.deferred = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "revs_deferred_total",
		Help: "Commits that changed no projected relationship: their rev rides with a later write instead of one of its own."})
	m.revFlushes = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "rev_flushes_total",
		Help: "Deferred revs written on their own (aged past --rev-flush-after, idle stream, or shutdown), one per repo."})
	m.heldRepos = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "deferred_rev_repos",
		Help: "Repos whose newest rev is not stored yet; the stored cursor stays below their oldest such commit."})
	m.rebuilds = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "rebuilds_total",
		Help: "Rebuilds started (first run, OutdatedCursor, reset, command)."})
	m.reconciled = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "reconcile_repos_total",
		Help: "Repos compared with SpiceDB by the periodic reconcile."})
	m.drift = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "reconcile_drift_total",
		Help: "Relationships found drifting by the periodic reconcile (then repaired by a resync), by kind."}, []string{"kind"})
	for _, k := range []string{DriftMissing, DriftExtra, DriftMissingLineage, DriftStaleLineage} {
		m.drift.WithLabelValues(k)
	}
	reg.MustRegister(m.applied, m.rejected, m.resyncs, m.resyncFails, m.cycles, m.unreadable, m.cachedRepos,
		m.restarts, m.desynced, m.claims, m.claimsStale, m.deferred, m.revFlushes,
		m.heldRepos, m.rbActive, m.rbTotal, m.rbDone, m.rbRecords, m.rebuilds, m.reconciled, m.drift)
	for _, r := range view.AllReasons {
		m.rejected.WithLabelValues(string(r))
	}
	for _, t := range []string{TriggerSync, TriggerGap, TriggerActivate, TriggerRewind, TriggerRebuild, TriggerUnreadable, TriggerMalformed,
		TriggerUnverified, TriggerClaim, TriggerRetry} {
		m.resyncs.WithLabelValues(t)
	}
	for _, k := range []string{"commit", "sync", "identity", "account"} {
		m.applied.WithLabelValues(k)
	}
	return m
}

func (m *Metrics) eventApplied(kind string) {
	if m != nil {
		m.applied.WithLabelValues(kind).Inc()
	}
}

func (m *Metrics) reject(r view.Reason) {
	if m != nil {
		m.rejected.WithLabelValues(string(r)).Inc()
	}
}

func (m *Metrics) resync(trigger string) {
	if m != nil {
		m.resyncs.WithLabelValues(trigger).Inc()
	}
}

func (m *Metrics) resyncFailed() {
	if m != nil {
		m.resyncFails.Inc()
	}
}

func (m *Metrics) duplicate() {
	if m != nil {
		m.duplicates.Inc()
	}
}

func (m *Metrics) unreadableRecord() {
	if m != nil {
		m.unreadable.Inc()
	}
}

func (m *Metrics) cycle() {
	if m != nil {
		m.cycles.Inc()
	}
}

func (m *Metrics) setCached(n int) {
	if m != nil {
		m.cachedRepos.Set(float64(n))
	}
}

func (m *Metrics) setDesync(n int) {
	if m != nil {
		m.desynced.Set(float64(n))
	}
}

func (m *Metrics) claimRefused() {
	if m != nil {
		m.claimsStale.Inc()
	}
}

func (m *Metrics) claimed() {
	if m != nil {
		m.claims.Inc()
	}
}

// Restarted counts a pipeline restart.
func (m *Metrics) Restarted() {
	if m != nil {
		m.restarts.Inc()
	}
}

func (m *Metrics) rebuildStarted() {
	if m != nil {
		m.rebuilds.Inc()
		m.rbActive.Set(1)
	}
}

func (m *Metrics) rebuildProgress(done, total int) {
	if m != nil {
		m.rbDone.Set(float64(done))
		m.rbTotal.Set(float64(total))
	}
}

func (m *Metrics) rebuildRecords(n int) {
	if m != nil {
		m.rbRecords.Add(float64(n))
	}
}

func (m *Metrics) rebuildFinished() {
	if m != nil {
		m.rbActive.Set(0)
	}
}

// Reconciled counts one repo compared, with its drift.
func (m *Metrics) Reconciled(drift []Drift) {
	if m == nil {
		return
	}
	m.reconciled.Inc()
	for _, d := range drift {
		m.drift.WithLabelValues(d.Kind).Inc()
	}
}

func (m *Metrics) revDeferred() {
	if m != nil {
		m.deferred.Inc()
	}
}

func (m *Metrics) revsFlushed(n int) {
	if m != nil {
		m.revFlushes.Add(float64(n))
	}
}

func (m *Metrics) setHeld(n int) {
	if m != nil {
		m.heldRepos.Set(float64(n))
	}
}
