package checkpoint

import (
	"errors"
	"sync"
)

// Config of a Progress.
type Config struct {
	// Source names the stream (required): the ID of the projector object
	// that holds its cursor and markers (DESIGN §4, "Sources").
	Source string
	// Stored is what SpiceDB holds for the source when the run starts
	// (Empty() when nothing).
	Stored State
	// MaxInFlight bounds the events between Begin and the watermark
	// (default DefaultMaxInFlight).
	MaxInFlight int
	// MaxInFlightBytes bounds their frame bytes (default
	// DefaultMaxInFlightBytes).
	MaxInFlightBytes int64
	// Metrics (optional).
	Metrics *Metrics
}

// Progress is the whole life of one source's cursor in a running daemon:
// the watermark of completed events (its Tracker), what SpiceDB stores, the
// markers, and the rule that decides whether a write may carry the cursor.
//
// It keeps DESIGN §4's invariant: the stored cursor N means every event with
// seq ≤ N is fully applied. The cursor a write stores is the watermark when
// the write is planned (events complete only after their own write commits,
// so the watermark never covers the write carrying it), and nothing is
// stored before a first run's rebuild marker: a crash in that window must
// leave "no cursor" (the next start rebuilds), never a cursor without a
// marker (which would skip everything made before the first start).
//
// Step and Committed are called by the one goroutine that writes, in write
// order; the readers are safe from any goroutine.
type Progress struct {
	source  string
	tracker *Tracker
	metrics *Metrics
	rewind  int64 // the rewind marker of this run, fixed at start

	mu     sync.Mutex
	stored State
	gated  bool // a first run: no cursor until the rebuild marker is stored
	held   holds
}

// New starts the progress of a run from what SpiceDB stores.
func New(cfg Config) (*Progress, error) {
	if cfg.Source == "" {
		return nil, errors.New("checkpoint: config: Source is required")
	}
	p := &Progress{source: cfg.Source, metrics: cfg.Metrics, rewind: cfg.Stored.Rewind, stored: cfg.Stored,
		gated: cfg.Stored.FirstRun()}
	p.tracker = NewTracker(cfg.Stored.Cursor, cfg.MaxInFlight, cfg.Metrics)
	p.tracker.SetMaxBytes(cfg.MaxInFlightBytes)
	cfg.Metrics.stored(cfg.Stored.Cursor)
	return p, nil
}

// Source is the name of the stream this progress belongs to.
func (p *Progress) Source() string { return p.source }

// Tracker is the watermark of completed events; the stream reader begins
// events on it and the projector marks them done.
func (p *Progress) Tracker() *Tracker { return p.tracker }

// Stored is what SpiceDB holds as of the last committed write.
func (p *Progress) Stored() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stored
}

// Rewind is the rewind marker the run started with (None when none): each
// repo's first event at or below it triggers a resync. It does not change
// during a run; once the cursor passes it no such event can arrive.
func (p *Progress) Rewind() int64 { return p.rewind }

// Markers are the rebuild-marker changes a write carries.
type Markers struct {
	// Place stores the marker at this seq; Clear removes the marker stored
	// at this seq. None for no change.
	Place, Clear int64
}

// NoMarkers changes no marker.
func NoMarkers() Markers { return Markers{Place: None, Clear: None} }

// Step plans the progress part of the next write: the cursor moves to the
// watermark, and no further than below the oldest hold (unless a first
// run's rebuild marker is not stored yet, and this write does not store it), the rewind marker goes once the cursor
// passes it, and the rebuild marker is placed or cleared as m says.
func (p *Progress) Step(m Markers) Step {
	// The watermark is read before the holds: an event is held before it
	// is marked done, so a watermark that covers a held event is always
	// seen with its hold.
	wm := p.tracker.Watermark()
	p.mu.Lock()
	from := p.stored
	gated := p.gated
	oldest := p.held.oldest()
	p.mu.Unlock()
	to := from
	opens := gated && m.Place != None
	if !gated || opens {
		if wm != None {
			if oldest != None && oldest-1 < wm {
				wm = max(oldest-1, from.Cursor) // below the oldest hold, never backwards
			}
			to.Cursor = wm
		}
	}
	if from.Rewind != None && to.Cursor != None && to.Cursor > from.Rewind {
		to.Rewind = None
	}
	if m.Clear != None && to.Rebuild == m.Clear {
		to.Rebuild = None
	}
	if m.Place != None && m.Place != m.Clear {
		to.Rebuild = m.Place
	}
	s := diff(p.source, from, to)
	s.opens = opens
	return s
}

// Committed records that the write carrying s committed.
func (p *Progress) Committed(s Step) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stored = s.to
	if s.opens {
		p.gated = false
	}
	p.metrics.stored(s.to.Cursor)
}
