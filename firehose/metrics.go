package firehose

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/internal/obs"
)

// Metrics of the stream client. Build with NewMetrics; a nil *Metrics is
// valid and records nothing.
type Metrics struct {
	events       *prometheus.CounterVec
	eventsByKind [len(kindNames)]prometheus.Counter // events' children, resolved once
	badFrames    *prometheus.CounterVec
	badOps       *prometheus.CounterVec
	duplicates   prometheus.Counter
	reconnects   prometheus.Counter
	connected    prometheus.Gauge
	headSeq      prometheus.Gauge
	headTime     prometheus.Gauge
	frameBytes   prometheus.Counter
	infos        *prometheus.CounterVec
	errorFrames  *prometheus.CounterVec
	repoFetches  *prometheus.CounterVec
	repoFetchDur prometheus.Histogram
	verifiedC    prometheus.Counter
	unverifiedC  *prometheus.CounterVec
}

// NewMetrics registers the stream metrics on reg (spaces_authz_firehose_*,
// spaces_authz_sync_*, and the stream stage of
// spaces_authz_duplicate_events_total).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "firehose",
			Name: "events_total", Help: "Sequenced events read from the PDS stream, by kind."}, []string{"kind"}),
		badFrames: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "firehose",
			Name: "bad_frames_total", Help: "Frames skipped as unusable, by reason."}, []string{"reason"}),
		badOps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "firehose",
			Name: "bad_ops_total", Help: "Record operations that could not be read (path, action or record), by reason."}, []string{"reason"}),
		duplicates: obs.DuplicateEvents(reg).WithLabelValues(obs.StageStream),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "firehose",
			Name: "reconnects_total", Help: "Connections to the PDS stream after the first."}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Subsystem: "firehose",
			Name: "connected", Help: "1 while the stream connection is up."}),
		headSeq: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Subsystem: "firehose",
			Name: "head_seq", Help: "The source's head: the highest seq the PDS has sent (replays included), kept while disconnected."}),
		headTime: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "spaces_authz", Subsystem: "firehose",
			Name: "head_event_time_seconds", Help: "Unix time carried by the newest event read."}),
		frameBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "firehose",
			Name: "read_bytes_total", Help: "Bytes of frames read from the stream."}),
		infos: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "firehose",
			Name: "info_messages_total", Help: "#info messages, by name."}, []string{"name"}),
		errorFrames: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "firehose",
			Name: "error_frames_total", Help: "Error frames sent by the PDS, by name."}, []string{"name"}),
		repoFetches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Subsystem: "sync",
			Name: "repo_fetches_total", Help: "getRepo calls, by result."}, []string{"result"}),
		repoFetchDur: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "spaces_authz", Subsystem: "sync",
			Name: "repo_fetch_duration_seconds", Help: "Time to fetch and read one repo CAR.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
	}
	m.verifiedC = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "commits_verified_total",
		Help: "Commits with projected ops whose signature and content were verified."})
	m.unverifiedC = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "spaces_authz", Name: "commits_unverified_total",
		Help: "Commits with projected ops refused by verification (not applied; the repo is resynced), by reason."}, []string{"reason"})
	reg.MustRegister(m.verifiedC, m.unverifiedC)
	for _, r := range unverifiedReasons {
		m.unverifiedC.WithLabelValues(r)
	}
	reg.MustRegister(m.events, m.badFrames, m.badOps, m.reconnects, m.connected, m.headSeq,
		m.headTime, m.frameBytes, m.infos, m.errorFrames, m.repoFetches, m.repoFetchDur)
	for _, k := range []Kind{KindCommit, KindSync, KindIdentity, KindAccount} {
		m.eventsByKind[k] = m.events.WithLabelValues(k.String())
	}
	for _, r := range []string{ReasonMalformedFrame, ReasonUnknownType, ReasonOversized, ReasonTextFrame,
		ReasonInvalidDID} {
		m.badFrames.WithLabelValues(r)
	}
	for _, r := range []string{ReasonBadPath, ReasonBadAction, ReasonBadCAR, ReasonMissingBlock, ReasonCIDMismatch,
		ReasonMalformedRec} {
		m.badOps.WithLabelValues(r)
	}
	return m
}

// event counts an event read; ts is its parsed time (zero when absent).
func (m *Metrics) event(ev *Event, ts time.Time) {
	if m == nil {
		return
	}
	if int(ev.Kind) < len(m.eventsByKind) && m.eventsByKind[ev.Kind] != nil {
		m.eventsByKind[ev.Kind].Inc()
	} else {
		m.events.WithLabelValues(ev.Kind.String()).Inc()
	}
	if !ts.IsZero() {
		m.headTime.Set(float64(ts.UnixMilli()) / 1000)
	}
}

// head records the source's head seq.
func (m *Metrics) head(seq int64) {
	if m != nil {
		m.headSeq.Set(float64(seq))
	}
}

func (m *Metrics) badFrame(reason string) {
	if m != nil {
		m.badFrames.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) badOp(reason string) {
	if m != nil {
		m.badOps.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) duplicate() {
	if m != nil {
		m.duplicates.Inc()
	}
}

func (m *Metrics) reconnect() {
	if m != nil {
		m.reconnects.Inc()
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

func (m *Metrics) read(n int) {
	if m != nil {
		m.frameBytes.Add(float64(n))
	}
}

func (m *Metrics) info(name string) {
	if m == nil {
		return
	}
	if name != InfoOutdatedCursor {
		name = "other"
	}
	m.infos.WithLabelValues(name).Inc()
}

func (m *Metrics) errorFrame(name string) {
	if m == nil {
		return
	}
	switch name {
	case "FutureCursor", "ConsumerTooSlow":
	default:
		name = "other"
	}
	m.errorFrames.WithLabelValues(name).Inc()
}

func (m *Metrics) repoFetch(result string, seconds float64) {
	if m == nil {
		return
	}
	m.repoFetches.WithLabelValues(result).Inc()
	if result == "ok" {
		m.repoFetchDur.Observe(seconds)
	}
}

func (m *Metrics) verified() {
	if m != nil {
		m.verifiedC.Inc()
	}
}

func (m *Metrics) unverified(reason string) {
	if m != nil {
		m.unverifiedC.WithLabelValues(reason).Inc()
	}
}
