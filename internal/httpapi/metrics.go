package httpapi

import "github.com/prometheus/client_golang/prometheus"

// adminOutcomes are the values of spaces_authz_admin_requests_total's label.
var adminOutcomes = []string{"ok", "disabled", "unauthorized", "malformed", "too_many_dids", "failed"}

// accountResyncResults are the values of
// spaces_authz_account_resync_requests_total's label.
var accountResyncResults = []string{"ok", "disabled", "busy", "auth_required", "malformed", "invalid_token",
	"identity_unavailable", "forbidden", "rate_limited", "failed"}

// Metrics of the HTTP endpoints. A nil *Metrics records nothing.
type Metrics struct {
	waiters     prometheus.Gauge
	refused     prometheus.Counter
	adminReqs   *prometheus.CounterVec
	accountReqs *prometheus.CounterVec
}

// NewMetrics registers the endpoints' metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		waiters: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "consistency_waiters",
			Help: "/v1/consistency requests waiting for a rev to be applied."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "consistency_refused_total",
			Help: "/v1/consistency requests refused with 429: too many were waiting."}),
		adminReqs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "admin_requests_total",
			Help: "Admin API requests, by outcome (ok, disabled, unauthorized, malformed, too_many_dids, failed)."},
			[]string{"outcome"}),
		accountReqs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz",
			Name: "account_resync_requests_total",
			Help: "Requests of accounts to resync themselves (" + ResyncAccountNSID + "), by result (ok, disabled, " +
				"busy, auth_required, malformed, invalid_token, identity_unavailable, forbidden, rate_limited, failed)."},
			[]string{"result"}),
	}
	reg.MustRegister(m.waiters, m.refused, m.adminReqs, m.accountReqs)
	for _, o := range adminOutcomes {
		m.adminReqs.WithLabelValues(o)
	}
	for _, o := range accountResyncResults {
		m.accountReqs.WithLabelValues(o)
	}
	return m
}

func (m *Metrics) waiting(delta float64) {
	if m != nil {
		m.waiters.Add(delta)
	}
}

func (m *Metrics) refusedWaiter() {
	if m != nil {
		m.refused.Inc()
	}
}

func (m *Metrics) admin(outcome string) {
	if m != nil {
		m.adminReqs.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) accountResync(result string) {
	if m != nil {
		m.accountReqs.WithLabelValues(result).Inc()
	}
}
