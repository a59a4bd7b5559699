package spice

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of SpiceDB writes and the lease. A nil *Metrics records nothing.
type Metrics struct {
	updates     *prometheus.CounterVec
	repoUpdates prometheus.Counter
	batchSize   prometheus.Histogram
	writeDur    prometheus.Histogram
	writeErrors *prometheus.CounterVec
	leaseState  *prometheus.GaugeVec
}

// Lease states reported by the spaces_authz_lease_state gauge.
const (
	LeaseWaiting = "waiting"
	LeaseHeld    = "held"
	LeaseFenced  = "fenced"
)

// NewMetrics registers the SpiceDB metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "spicedb",
			Name: "relationship_updates_total", Help: "Relationship updates committed to SpiceDB, by operation."}, []string{"op"}),
		repoUpdates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "spicedb", Name: "repo_bookkeeping_updates_total",
			Help: "Of spaces_authz_spicedb_relationship_updates_total, the updates of repos' bookkeeping (rev, status, source, markers); the rest is data and lineage."}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "spaces_authz", Subsystem: "spicedb", Name: "write_batch_updates",
			Help: "Updates per WriteRelationships call.", Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000}}),
		writeDur: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "spaces_authz", Subsystem: "spicedb", Name: "write_duration_seconds",
			Help: "Duration of successful WriteRelationships calls.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "spicedb",
			Name: "write_errors_total", Help: "Failed WriteRelationships calls, by class."}, []string{"class"}),
		leaseState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "lease_state",
			Help: "1 for the consumer's current lease state (waiting, held, fenced)."}, []string{"state"}),
	}
	reg.MustRegister(m.updates, m.repoUpdates, m.batchSize, m.writeDur, m.writeErrors, m.leaseState)
	for _, op := range []string{"touch", "delete"} {
		m.updates.WithLabelValues(op)
	}
	for _, c := range []Class{ClassTransient, ClassPrecondition, ClassSchema, ClassRefused, ClassFatal} {
		m.writeErrors.WithLabelValues(c.String())
	}
	for _, s := range []string{LeaseWaiting, LeaseHeld, LeaseFenced} {
		m.leaseState.WithLabelValues(s)
	}
	return m
}

func (m *Metrics) written(touch, del, repo int, d time.Duration) {
	if m == nil {
		return
	}
	m.updates.WithLabelValues("touch").Add(float64(touch))
	m.updates.WithLabelValues("delete").Add(float64(del))
	m.repoUpdates.Add(float64(repo))
	m.batchSize.Observe(float64(touch + del))
	m.writeDur.Observe(d.Seconds())
}

func (m *Metrics) writeError(c Class) {
	if m != nil {
		m.writeErrors.WithLabelValues(c.String()).Inc()
	}
}

// SetLeaseState marks state as the current lease state.
func (m *Metrics) SetLeaseState(state string) {
	if m == nil {
		return
	}
	for _, s := range []string{LeaseWaiting, LeaseHeld, LeaseFenced} {
		v := 0.0
		if s == state {
			v = 1
		}
		m.leaseState.WithLabelValues(s).Set(v)
	}
}
