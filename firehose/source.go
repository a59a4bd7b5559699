package firehose

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/checkpoint"
)

// QuietPeriod is how long a connected stream goes without an event frame,
// every event read being applied, before the consumer counts as caught up
// (lag 0): a connected PDS sends what it has, so after a quiet second or
// two there is nothing newer. While frames keep coming the consumer may be
// reading a backlog, and the lag is measured by event times instead.
const QuietPeriod = 2 * time.Second

// Source is what the consumer knows of its PDS across connections and
// pipeline runs: the head seq the PDS has announced, the state of the
// link, and from them the lag (DESIGN §8). The Clients of successive runs
// share one (Config.Source). It is safe for concurrent use.
type Source struct {
	mu        sync.Mutex
	head      int64     // highest seq the PDS has sent (checkpoint.None before any)
	connected bool      // the link is up
	since     time.Time // when connected last changed (the Source's creation before any)
	upAt      time.Time // when the link last came up
	// down is when the current outage began: the last drop of a link that
	// proved itself (delivered a frame, or stayed up for QuietPeriod), or the
	// creation. A link that dies before either tells nothing of the PDS.
	down      time.Time
	lastFrame time.Time // when the newest event frame was read (local clock)
	applied   time.Time // the newest applied event's time, kept across runs
	// stale is when a rebuild of an incomplete view began (zero when none
	// runs): until it commits the view is at least that stale, whatever
	// the stream says.
	stale   time.Time
	tracker *checkpoint.Tracker
}

// SetStale says that the view is incomplete since t (a first run's or a
// reset's rebuild, events the PDS no longer has), or, with the zero time,
// that it is complete again: lag is at least now − t meanwhile.
func (s *Source) SetStale(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stale = t
}

// NewSource makes a Source and, when reg is not nil, registers the lag
// gauges on it (spaces_authz_lag_events, spaces_authz_lag_seconds), which
// are computed when scraped.
func NewSource(reg prometheus.Registerer) *Source {
	now := time.Now()
	s := &Source{head: checkpoint.None, since: now, down: now}
	if reg != nil {
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "lag_events",
				Help: "Events the source has announced and the consumer has not applied: the PDS's head seq as last " +
					"seen (the newest frame; kept while disconnected) minus the applied watermark. A lower bound " +
					"while disconnected or reading a backlog: only the stream reveals the head."},
				func() float64 { return float64(s.Lag().Events) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "spaces_authz", Name: "lag_seconds",
				Help: "Wall-clock staleness of the view: 0 when caught up (connected, every event the PDS sent " +
					"applied, stream quiet); while behind, now minus the time of the oldest unapplied event (or of the " +
					"newest applied one while a backlog streams in); while disconnected, at least now minus the " +
					"moment the link went down. Grows while disconnected or stuck."},
				func() float64 { return s.Lag().Seconds }),
		)
	}
	return s
}

// Lag is the consumer's distance from its source.
type Lag struct {
	// Head is the highest seq the PDS has sent (checkpoint.None when none
	// was seen); Watermark the applied watermark of the current run.
	Head, Watermark int64
	// Events is Head minus Watermark (0 when either is unknown).
	Events int64
	// Seconds is how stale the view is by the wall clock (see lagOf).
	Seconds float64
	// Connected is the state of the link, and Since when it last changed.
	Connected bool
	Since     time.Time
}

// Lag computes the lag now.
func (s *Source) Lag() Lag { return s.lagAt(time.Now()) }

// LastFrame is when the newest event frame was read, by any run's Client
// (zero before any).
func (s *Source) LastFrame() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastFrame
}

// Head is the highest seq the PDS has sent (checkpoint.None before any).
func (s *Source) Head() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head
}

func (s *Source) lagAt(now time.Time) Lag {
	s.mu.Lock()
	in := lagInput{head: s.head, watermark: checkpoint.None, connected: s.connected, since: s.since,
		lastFrame: s.lastFrame, upAt: s.upAt, down: s.down, stale: s.stale}
	tr := s.tracker
	s.mu.Unlock()
	if tr != nil {
		var applied time.Time
		in.watermark = tr.Watermark()
		applied, in.pending = tr.Times()
		s.mu.Lock()
		if applied.After(s.applied) {
			s.applied = applied
		}
		in.applied = s.applied
		s.mu.Unlock()
	}
	return lagOf(in, now)
}

// attach makes tr, the tracker of the run that starts, the one lag is
// measured with.
func (s *Source) attach(tr *checkpoint.Tracker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tracker = tr
}

// link records the link going up or down at now.
func (s *Source) link(up bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if up == s.connected {
		return
	}
	if up {
		s.upAt = now
	} else if proven(s.lastFrame, s.upAt, now) {
		s.down = now
	}
	s.connected, s.since = up, now
}

// proven reports whether a link up since upAt has told something of the
// PDS by now: it delivered an event frame, or it stayed up (quiet) for
// QuietPeriod.
func proven(lastFrame, upAt, now time.Time) bool {
	return (!lastFrame.IsZero() && !lastFrame.Before(upAt)) || now.Sub(upAt) >= QuietPeriod
}

// saw records an event frame with seq read at now (replays included) and
// returns the head.
func (s *Source) saw(seq int64, now time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastFrame = now
	if seq > s.head {
		s.head = seq
	}
	return s.head
}

// lagInput is what lag is computed from.
type lagInput struct {
	head, watermark int64
	// applied is the newest applied event's time, pending the oldest
	// unapplied one's (zero when unknown or none).
	applied, pending time.Time
	connected        bool
	since            time.Time // when the link last went up or down
	lastFrame        time.Time // when the newest event frame was read
	// upAt is when the link last came up; down when the current outage
	// began (zero: since).
	upAt, down time.Time
	// stale is when a rebuild of an incomplete view began (zero: none).
	stale time.Time
}

// lagOf computes the lag. The view is complete up to a moment ref, and
// lag is now minus ref:
//   - events in flight: ref is the oldest unapplied event's time;
//   - behind the head with nothing in flight (a new run from the stored
//     cursor has not read its events again yet): ref is the newest applied
//     event's time, or the moment the link last changed when later;
//   - nothing in flight, stream quiet for QuietPeriod (as of now, or of the
//     disconnection): caught up, ref is that moment (now while connected:
//     lag 0, an idle PDS pages nobody);
//   - nothing in flight, frames still streaming in (a backlog: a replay
//     after a reconnect, or a reader slower than the PDS): ref is the newest
//     applied event's time;
//   - disconnected: ref is at most the moment the link went down, so lag
//     grows with the wall clock from then on (from the start when it never
//     came up);
//   - a rebuild of an incomplete view runs (a first run, a reset, events
//     the PDS no longer has): ref is at most its start, whatever the stream
//     says, until it commits.
//
// Event times are the PDS's clock: skew shows as a constant offset, and a
// negative lag reads 0.
func lagOf(in lagInput, now time.Time) Lag {
	l := Lag{Head: in.head, Watermark: in.watermark, Connected: in.connected, Since: in.since}
	if in.head >= 0 && in.watermark >= 0 && in.head > in.watermark {
		l.Events = in.head - in.watermark
	}
	down := in.down
	if down.IsZero() {
		down = in.since
	}
	// A link that came up less than QuietPeriod ago without a frame yet
	// tells nothing: as if still down.
	known := in.connected && proven(in.lastFrame, in.upAt, now)
	end := now // the last moment the link was known up
	if !known {
		end = down
	}
	var ref time.Time
	switch {
	case !in.pending.IsZero():
		ref = in.pending
	case l.Events > 0:
		ref = in.applied
		if in.since.After(ref) {
			ref = in.since
		}
	case in.lastFrame.IsZero() || end.Sub(in.lastFrame) >= QuietPeriod || in.applied.IsZero():
		ref = end
	default:
		ref = in.applied
	}
	if !known && down.Before(ref) {
		ref = down
	}
	if !in.stale.IsZero() && in.stale.Before(ref) {
		ref = in.stale // a rebuild of an incomplete view runs
	}
	if d := now.Sub(ref); d > 0 {
		l.Seconds = d.Seconds()
	}
	return l
}
