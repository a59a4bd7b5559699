package ident

import "github.com/prometheus/client_golang/prometheus"

// Lookup results (the `result` label).
const (
	resultHit   = "hit"
	resultMiss  = "miss"
	resultError = "error"
)

// Metrics of a Directory. A nil *Metrics records nothing.
type Metrics struct {
	lookups *prometheus.CounterVec
	purges  prometheus.Counter
}

// NewMetrics registers the identity metrics (spaces_authz_identity_*) on
// reg; a nil reg gives nil Metrics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		return nil
	}
	m := &Metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "identity",
			Name: "lookups_total", Help: "Identity lookups, by result (hit: from the cache, miss: resolved, error: failed or a cached failure)."},
			[]string{"result"}),
		purges: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "identity",
			Name: "purges_total", Help: "Cached identities dropped (an #identity event, or a signature that failed)."}),
	}
	reg.MustRegister(m.lookups, m.purges)
	for _, r := range []string{resultHit, resultMiss, resultError} {
		m.lookups.WithLabelValues(r)
	}
	return m
}

func (m *Metrics) lookup(result string) {
	if m != nil {
		m.lookups.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) purge() {
	if m != nil {
		m.purges.Inc()
	}
}
