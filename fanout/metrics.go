package fanout

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the fan-out. A nil *Metrics records nothing.
type Metrics struct {
	published *prometheus.CounterVec
	connected prometheus.Gauge
}

// NewMetrics registers the fan-out metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "nats_publishes_total",
			Help: "Messages published to JetStream, by result (ok, duplicate, error)."}, []string{"result"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "nats_connected",
			Help: "1 while connected to NATS."}),
	}
	reg.MustRegister(m.published, m.connected)
	for _, r := range []string{"ok", "duplicate", "error"} {
		m.published.WithLabelValues(r)
	}
	return m
}

func (m *Metrics) publish(result string) {
	if m != nil {
		m.published.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) setConnected(up bool) {
	if m == nil {
		return
	}
	if up {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}
