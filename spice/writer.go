package spice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/internal/backoff"
	"github.com/spaces-authz/spaces-authz/internal/crashpoint"
	"github.com/spaces-authz/spaces-authz/projector"
)

// MaxUpdatesPerCall is SpiceDB's default limit on updates per write.
const MaxUpdatesPerCall = 1000

// Reserved is how many updates of a call the writer keeps for itself (the
// cursor and the heartbeat, a DELETE and a TOUCH each).
const Reserved = 4

// DefaultHeartbeatEvery is how often the heartbeat is rewritten.
const DefaultHeartbeatEvery = 5 * time.Second

// WriterConfig configures a Writer.
type WriterConfig struct {
	Client *Client
	// Name of the projector and Holder, this consumer's ID (required).
	Name, Holder string
	// Lease is the state AcquireLease returned: the stored cursor and
	// heartbeat the writer rewrites.
	Lease ProjectorState
	// HeartbeatEvery (default 5s): writes refresh the heartbeat when it is
	// older than half of this.
	HeartbeatEvery time.Duration
	// BackoffMin and BackoffMax bound retries of transient errors.
	BackoffMin, BackoffMax time.Duration
	Logger                 *slog.Logger
	Metrics                *Metrics
	Now                    func() time.Time
}

// Writer writes the projector's batches. It is safe for concurrent use but
// serialises calls: the cursor it rewrites must move in order.
type Writer struct {
	cfg WriterConfig
	log *slog.Logger
	mu  sync.Mutex
	cur int64 // stored cursor
	hb  int64 // stored heartbeat (ms)
	// rewind is the stored rewind marker: cleared in the write whose
	// cursor passes it, since every event it covers is then replayed.
	rewind int64
	tok    string
	dead   error
}

var _ projector.Writer = (*Writer)(nil)

// NewWriter builds a writer for a held lease.
func NewWriter(cfg WriterConfig) *Writer {
	if cfg.HeartbeatEvery <= 0 {
		cfg.HeartbeatEvery = DefaultHeartbeatEvery
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg.Metrics.setCursor(cfg.Lease.Cursor)
	return &Writer{cfg: cfg, log: log.With("component", "spice-writer"), cur: cfg.Lease.Cursor, hb: cfg.Lease.HeartbeatMs,
		rewind: cfg.Lease.Rewind}
}

// Cursor is the cursor stored by the last successful write.
func (w *Writer) Cursor() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// Token is the ZedToken of the last successful write ("" before one).
func (w *Writer) Token() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tok
}

// Write commits updates, the cursor (when it moved; NoSeq leaves it alone),
// and the heartbeat (when due) in one WriteRelationships call guarded by a
// MUST_MATCH on this consumer's holder tuple. Transient errors are retried
// with backoff until ctx ends. It returns the write's ZedToken, or a fatal
// error: ErrFenced, ErrReset, ErrLeaseLost, ErrSchema, a *RefusedError, or
// ctx's error (nothing was written).
func (w *Writer) Write(ctx context.Context, updates []projector.Update, cursor int64) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead != nil {
		return "", w.dead
	}
	if len(updates) > MaxUpdatesPerCall-Reserved {
		return "", fmt.Errorf("spice: write: %d updates is over the %d a call can carry", len(updates), MaxUpdatesPerCall-Reserved)
	}
	bo := backoff.Backoff{Min: w.cfg.BackoffMin, Max: w.cfg.BackoffMax}
	preconditionRetries := 0
	for {
		all := updates
		newCur := NoSeq
		if cursor != NoSeq && cursor != w.cur {
			newCur = cursor
			all = append(all[:len(all):len(all)], projector.Update{Op: projector.OpTouch, Tuple: CursorTuple(w.cfg.Name, cursor)})
			if w.cur != NoSeq {
				all = append(all, projector.Update{Op: projector.OpDelete, Tuple: CursorTuple(w.cfg.Name, w.cur)})
			}
		}
		clearRewind := w.rewind != NoSeq && newCur > w.rewind
		if clearRewind {
			all = append(all[:len(all):len(all)], projector.Update{Op: projector.OpDelete,
				Tuple: MarkerTuple(w.cfg.Name, projector.RelRewind, w.rewind)})
		}
		var newHB int64
		if ms := w.cfg.Now().UnixMilli(); time.Duration(ms-w.hb)*time.Millisecond >= w.cfg.HeartbeatEvery/2 {
			newHB = ms
			all = append(all[:len(all):len(all)], projector.Update{Op: projector.OpTouch, Tuple: HeartbeatTuple(w.cfg.Name, ms)})
			if w.hb != 0 {
				all = append(all, projector.Update{Op: projector.OpDelete, Tuple: HeartbeatTuple(w.cfg.Name, w.hb)})
			}
		}
		if len(all) == 0 {
			return w.tok, nil
		}
		start := time.Now()
		crashpoint.Hit(crashpoint.BeforeWrite)
		tok, err := w.cfg.Client.write(ctx, all, []*v1.Precondition{mustMatch(HolderTuple(w.cfg.Name, w.cfg.Holder))})
		if err == nil {
			crashpoint.Hit(crashpoint.AfterWrite)
			touch, del := 0, 0
			for _, u := range updates {
				if u.Op == projector.OpTouch {
					touch++
				} else {
					del++
				}
			}
			w.cfg.Metrics.written(touch, del, time.Since(start))
			if newCur != NoSeq {
				w.cur = newCur
				w.cfg.Metrics.setCursor(newCur)
			}
			if newHB != 0 {
				w.hb = newHB
			}
			if clearRewind {
				w.rewind = NoSeq
			}
			w.tok = tok
			return tok, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		class := Classify(err)
		w.cfg.Metrics.writeError(class)
		switch class {
		case ClassTransient:
			d := bo.Next()
			w.log.Warn("SpiceDB write failed; retrying", "err", err, "attempt", bo.Attempts(), "delay", d, "updates", len(all))
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(d):
			}
		case ClassPrecondition:
			lerr := w.leaseError(ctx)
			if lerr == nil && preconditionRetries < 3 {
				preconditionRetries++
				continue
			}
			if lerr == nil {
				lerr = fmt.Errorf("spice: write precondition keeps failing while the lease looks held: %w", err)
			}
			if errors.Is(lerr, ErrFenced) {
				w.cfg.Metrics.SetLeaseState(LeaseFenced)
			}
			w.dead = lerr
			return "", lerr
		case ClassSchema:
			w.dead = w.schemaError(ctx, err)
			return "", w.dead
		case ClassRefused:
			return "", &RefusedError{Err: err}
		default:
			w.dead = fmt.Errorf("spice: write: %w", err)
			return "", w.dead
		}
	}
}

// schemaError tells a wrong schema from a SpiceDB that lost everything: a
// restarted memory datastore has no schema at all, and that is a reset.
func (w *Writer) schemaError(ctx context.Context, err error) error {
	s, rerr := w.cfg.Client.ReadSchema(ctx)
	if rerr == nil && !strings.Contains(s, "definition "+projector.TypeProjector+" ") {
		return fmt.Errorf("%w (its schema is gone too: %w)", ErrReset, err)
	}
	return fmt.Errorf("%w: %w", ErrSchema, err)
}

// leaseError re-reads the lease after a failed precondition and says why.
func (w *Writer) leaseError(ctx context.Context) error {
	st, err := w.cfg.Client.ReadProjector(ctx, w.cfg.Name)
	if err != nil {
		return fmt.Errorf("spice: re-read lease after a failed precondition: %w", err)
	}
	switch {
	case st.Holder == w.cfg.Holder:
		return nil
	case st.Holder == "" && st.Cursor == NoSeq:
		return ErrReset
	case st.Holder == "":
		return ErrLeaseLost
	default:
		return fmt.Errorf("%w (new holder %s)", ErrFenced, st.Holder)
	}
}

// dryRunHolder can never hold a lease (it is not a valid consumer ID that
// NewHolderID makes), so a precondition on it always fails.
const dryRunHolder = "dry-run-never-a-holder"

// DryRun asks SpiceDB to validate updates without applying them: the write
// carries a precondition that can't hold, and SpiceDB validates updates
// before preconditions. nil means every update is acceptable.
func (w *Writer) DryRun(ctx context.Context, updates []projector.Update) error {
	if len(updates) == 0 {
		return nil
	}
	_, err := w.cfg.Client.write(ctx, updates, []*v1.Precondition{mustMatch(HolderTuple(w.cfg.Name, dryRunHolder))})
	if err == nil {
		return errors.New("spice: dry run was applied: a consumer is using the reserved dry-run holder ID")
	}
	switch Classify(err) {
	case ClassPrecondition:
		return nil
	case ClassRefused:
		return &RefusedError{Err: err}
	}
	return fmt.Errorf("spice: dry run: %w", err)
}

// Refused reports whether err is SpiceDB refusing a relationship.
func (w *Writer) Refused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

// Release gives the lease up on a clean shutdown, so the next consumer
// doesn't wait for the heartbeat to go stale.
func (w *Writer) Release(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead != nil {
		return w.dead
	}
	updates := []projector.Update{{Op: projector.OpDelete, Tuple: HolderTuple(w.cfg.Name, w.cfg.Holder)}}
	if w.hb != 0 {
		updates = append(updates, projector.Update{Op: projector.OpDelete, Tuple: HeartbeatTuple(w.cfg.Name, w.hb)})
	}
	_, err := w.cfg.Client.write(ctx, updates, []*v1.Precondition{mustMatch(HolderTuple(w.cfg.Name, w.cfg.Holder))})
	if err != nil {
		return fmt.Errorf("spice: release lease: %w", err)
	}
	w.dead = ErrNotHolder
	return nil
}

// Marker is a projector marker to set: Rel is projector.RelRewind or
// RelRebuild, Old the stored value (NoSeq when none), New the value to
// store (NoSeq to clear).
type Marker struct {
	Rel      string
	Old, New int64
}

// WriteMarkers moves the cursor (NoSeq leaves it) and sets markers, in one
// call under the lease.
func (w *Writer) WriteMarkers(ctx context.Context, markers []Marker, cursor int64) (string, error) {
	var us []projector.Update
	for _, m := range markers {
		if m.Old != NoSeq && m.Old != m.New {
			us = append(us, projector.Update{Op: projector.OpDelete, Tuple: MarkerTuple(w.cfg.Name, m.Rel, m.Old)})
		}
		if m.New != NoSeq && m.New != m.Old {
			us = append(us, projector.Update{Op: projector.OpTouch, Tuple: MarkerTuple(w.cfg.Name, m.Rel, m.New)})
		}
	}
	return w.Write(ctx, us, cursor)
}
