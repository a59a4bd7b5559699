package checkpoint

import "github.com/prometheus/client_golang/prometheus"

// Metrics of a source's progress. A nil *Metrics records nothing.
type Metrics struct {
	cursor    prometheus.Gauge
	watermark prometheus.Gauge
	inFlight  prometheus.Gauge
	lag       prometheus.Gauge
}

// NewMetrics registers the progress metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		cursor: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "consumer", Name: "cursor_seq",
			Help: "The cursor stored in SpiceDB: every seq at or below it is applied."}),
		watermark: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "consumer", Name: "watermark_seq",
			Help: "Every seq at or below this is applied (the next cursor to store)."}),
		// The firehose subsystem is historical: dashboards know the name.
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "consumer", Subsystem: "firehose", Name: "in_flight_events",
			Help: "Events read and not yet passed by the watermark."}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "consumer", Name: "lag_events",
			Help: "Events read from the stream and not yet applied (head seq minus watermark)."}),
	}
	reg.MustRegister(m.cursor, m.watermark, m.inFlight, m.lag)
	return m
}

// tracked updates the gauges the Tracker drives.
func (m *Metrics) tracked(watermark, highest int64, inFlight int) {
	if m == nil {
		return
	}
	if watermark >= 0 {
		m.watermark.Set(float64(watermark))
	}
	m.inFlight.Set(float64(inFlight))
	lag := 0.0
	if watermark >= 0 && highest > watermark {
		lag = float64(highest - watermark)
	}
	m.lag.Set(lag)
}

func (m *Metrics) stored(cursor int64) {
	if m != nil && cursor >= 0 {
		m.cursor.Set(float64(cursor))
	}
}
