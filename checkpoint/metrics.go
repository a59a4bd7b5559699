package checkpoint

import "github.com/prometheus/client_golang/prometheus"

// Metrics of a source's progress. A nil *Metrics records nothing.
type Metrics struct {
	cursor    prometheus.Gauge
	watermark prometheus.Gauge
	inFlight  prometheus.Gauge
}

// NewMetrics registers the progress metrics on reg. The lag gauges are the
// stream's (firehose.Source): lag is measured against the source's head,
// not against the events read.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		cursor: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "cursor_seq",
			Help: "The cursor stored in SpiceDB: every seq at or below it is applied."}),
		watermark: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "watermark_seq",
			Help: "Every seq at or below this is applied (the next cursor to store)."}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "in_flight_events",
			Help: "Events read and not yet passed by the watermark."}),
	}
	reg.MustRegister(m.cursor, m.watermark, m.inFlight)
	return m
}

// tracked updates the gauges the Tracker drives.
func (m *Metrics) tracked(watermark int64, inFlight int) {
	if m == nil {
		return
	}
	if watermark >= 0 {
		m.watermark.Set(float64(watermark))
	}
	m.inFlight.Set(float64(inFlight))
}

func (m *Metrics) stored(cursor int64) {
	if m != nil && cursor >= 0 {
		m.cursor.Set(float64(cursor))
	}
}
