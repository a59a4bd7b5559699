package spice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/internal/backoff"
	"github.com/spaces-authz/spaces-authz/internal/crashpoint"
	"github.com/spaces-authz/spaces-authz/view"
)

// MaxUpdatesPerCall is SpiceDB's default limit on updates per write
// (--write-relationships-max-updates-per-call).
const MaxUpdatesPerCall = 1000

// Reserved is how many updates of a call the writer and the progress it
// carries may need besides the data: the heartbeat (a DELETE and a TOUCH)
// and a checkpoint.Step.
const Reserved = 2 + checkpoint.MaxStepUpdates

// DefaultHeartbeatEvery is how often the heartbeat is rewritten.
const DefaultHeartbeatEvery = 5 * time.Second

// WriterConfig configures a Writer.
type WriterConfig struct {
	Client *Client
	// Name of the projector and Holder, this consumer's ID (required).
	Name, Holder string
	// HeartbeatMs is the heartbeat AcquireLease stored (the writer
	// rewrites it).
	HeartbeatMs int64
	// Epoch is the source's ownership epoch as AcquireLease read it
	// (checkpoint.None: writes carry no epoch precondition, as tools do).
	Epoch int64
	// HeartbeatEvery (default 5s): writes refresh the heartbeat when it is
	// older than half of this.
	HeartbeatEvery time.Duration
	// BackoffMin and BackoffMax bound retries of transient errors.
	BackoffMin, BackoffMax time.Duration
	// OnRetry (optional) hears every transient failure a write retries
	// (SpiceDB or its datastore unavailable), so that status can say so.
	OnRetry func(error)
	Logger  *slog.Logger
	Metrics *Metrics
	Now     func() time.Time
}

// Writer writes the projector's batches under the lease. It is safe for
// concurrent use and serialises calls.
type Writer struct {
	cfg  WriterConfig
	log  *slog.Logger
	mu   sync.Mutex
	hb   int64 // stored heartbeat (ms)
	tok  string
	dead error
}

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
	return &Writer{cfg: cfg, log: log.With("component", "spice-writer"), hb: cfg.HeartbeatMs}
}

// Token is the ZedToken of the last successful write ("" before one).
func (w *Writer) Token() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tok
}

// Write commits updates, the progress updates that go with them (a
// checkpoint.Step's), and the heartbeat when it is due, in one
// WriteRelationships call guarded by a MUST_MATCH on this consumer's holder
// tuple and on its source's epoch, and by guards. Only updates count in the
// metrics. Transient errors are retried with backoff until ctx ends. It
// returns the write's ZedToken, or a fatal error: ErrFenced, ErrReset,
// ErrLeaseLost, ErrOwnership (the epoch moved or a guard failed), ErrSchema,
// a *RefusedError, or ctx's error (nothing was written).
func (w *Writer) Write(ctx context.Context, updates, progress []view.Update, guards []view.Guard) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead != nil {
		return "", w.dead
	}
	if n := len(updates) + len(progress); n > MaxUpdatesPerCall-2 {
		return "", fmt.Errorf("spice: write: %d updates is over the %d a call can carry", n, MaxUpdatesPerCall-2)
	}
	if len(guards) > MaxGuards {
		return "", fmt.Errorf("spice: write: %d guards is over the %d a call may carry", len(guards), MaxGuards)
	}
	pre := w.preconditions(guards)
	// The progress this write replaces, and the heartbeat this writer
	// stored last, must still be stored: a SpiceDB restored from a backup
	// under the running consumer holds an older cursor and heartbeat (and
	// lacks what was written since), and moving on from the cursor in
	// memory would leave that gap in the view forever. The heartbeat
	// catches a backup whose cursor is still the one in memory (the
	// cursor trails the data by a flush), unless it is younger than half a
	// heartbeat period.
	var replaced []view.Tuple
	if w.hb != 0 {
		hb := view.HeartbeatTuple(w.cfg.Name, w.hb)
		replaced = append(replaced, hb)
		pre = append(pre, mustMatch(hb))
	}
	for _, u := range progress {
		if u.Op == view.OpDelete && u.Tuple.ResourceType == view.TypeProjector {
			replaced = append(replaced, u.Tuple)
			pre = append(pre, mustMatch(u.Tuple))
		}
	}
	bo := backoff.Backoff{Min: w.cfg.BackoffMin, Max: w.cfg.BackoffMax}
	preconditionRetries := 0
	for {
		all, newHB := w.withHeartbeat(updates, progress)
		if len(all) == 0 {
			return w.tok, nil
		}
		start := time.Now()
		crashpoint.Hit(crashpoint.BeforeWrite)
		tok, err := w.cfg.Client.write(ctx, all, pre)
		if err == nil {
			crashpoint.Hit(crashpoint.AfterWrite)
			w.committed(updates, newHB, tok, time.Since(start))
			return tok, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		retry, ferr := w.failed(ctx, err, &bo, &preconditionRetries, len(all), len(guards) > 0, replaced)
		if !retry {
			return "", ferr
		}
	}
}

// MaxGuards bounds the guards of one write: SpiceDB takes 1,000
// preconditions a call, and the writer adds a few of its own (holder,
// epoch, heartbeat, the progress tuples it replaces).
const MaxGuards = 512

// preconditions are the call's: this consumer holds the lease, its source's
// epoch has not moved, and the guards hold.
func (w *Writer) preconditions(guards []view.Guard) []*v1.Precondition {
	pre := make([]*v1.Precondition, 0, 2+len(guards))
	pre = append(pre, mustMatch(view.HolderTuple(w.cfg.Name, w.cfg.Holder)))
	if w.cfg.Epoch != checkpoint.None {
		pre = append(pre, mustMatch(view.EpochTuple(w.cfg.Name, w.cfg.Epoch)))
	}
	for _, g := range guards {
		if g.Absent {
			pre = append(pre, &v1.Precondition{Operation: v1.Precondition_OPERATION_MUST_NOT_MATCH,
				Filter: &v1.RelationshipFilter{ResourceType: g.Tuple.ResourceType, OptionalResourceId: g.Tuple.ResourceID,
					OptionalRelation: g.Tuple.Relation}})
			continue
		}
		pre = append(pre, mustMatch(g.Tuple))
	}
	return pre
}

// withHeartbeat is the call's updates: data, progress, and the heartbeat
// when half of HeartbeatEvery has passed (newHB is then its new value).
func (w *Writer) withHeartbeat(updates, progress []view.Update) (all []view.Update, newHB int64) {
	all = append(updates[:len(updates):len(updates)], progress...)
	if ms := w.cfg.Now().UnixMilli(); time.Duration(ms-w.hb)*time.Millisecond >= w.cfg.HeartbeatEvery/2 {
		newHB = ms
		all = append(all, view.Update{Op: view.OpTouch, Tuple: view.HeartbeatTuple(w.cfg.Name, ms)})
		if w.hb != 0 {
			all = append(all, view.Update{Op: view.OpDelete, Tuple: view.HeartbeatTuple(w.cfg.Name, w.hb)})
		}
	}
	return all, newHB
}

// committed records a successful write.
func (w *Writer) committed(updates []view.Update, newHB int64, tok string, took time.Duration) {
	touch, del, repo := 0, 0, 0
	for _, u := range updates {
		if u.Op == view.OpTouch {
			touch++
		} else {
			del++
		}
		if u.Tuple.ResourceType == view.TypeRepo {
			repo++
		}
	}
	w.cfg.Metrics.written(touch, del, repo, took)
	if newHB != 0 {
		w.hb = newHB
	}
	w.tok = tok
}

// failed classifies a failed write: a transient error waits out its backoff
// (retry), a precondition failure re-reads the lease (retry a few times
// while it still looks held), and anything else is returned, fatal ones
// marking the writer dead.
func (w *Writer) failed(ctx context.Context, err error, bo *backoff.Backoff, preconditionRetries *int, n int,
	guarded bool, replaced []view.Tuple) (retry bool, _ error) {
	class := Classify(err)
	w.cfg.Metrics.writeError(class)
	switch class {
	case ClassTransient:
		if w.cfg.OnRetry != nil {
			w.cfg.OnRetry(err)
		}
		d := bo.Next()
		w.log.Warn("SpiceDB write failed; retrying", "err", err, "attempt", bo.Attempts(), "delay", d, "updates", n)
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(d):
			return true, nil
		}
	case ClassPrecondition:
		lerr := w.leaseError(ctx)
		if lerr == nil && len(replaced) > 0 {
			lerr = w.progressError(ctx, replaced)
		}
		if errors.Is(lerr, ErrProgressMoved) {
			return false, lerr // not fatal to the writer's lease: the run restarts from the stored cursor
		}
		if lerr == nil && guarded {
			// The lease and the epoch hold: a guard failed, so a repo this
			// write claims changed hands or state since it was read.
			return false, fmt.Errorf("%w: a guarded repo changed since it was read", ErrOwnership)
		}
		if lerr == nil && *preconditionRetries < 3 {
			*preconditionRetries++
			return true, nil
		}
		if lerr == nil {
			lerr = fmt.Errorf("spice: write precondition keeps failing while the lease looks held: %w", err)
		}
		if errors.Is(lerr, ErrFenced) {
			w.cfg.Metrics.SetLeaseState(LeaseFenced)
		}
		w.dead = lerr
	case ClassSchema:
		w.dead = w.schemaError(ctx, err)
	case ClassRefused:
		return false, &RefusedError{Err: err}
	default:
		w.dead = fmt.Errorf("spice: write: %w", err)
	}
	return false, w.dead
}

// schemaError tells a wrong schema from a SpiceDB that lost everything: a
// restarted memory datastore has no schema at all, and that is a reset. The
// schema may also be back already (a deploy job applies it as SpiceDB
// starts, between the failed write and the read here): then the lease and
// the cursor, gone with everything else, say it was a reset.
func (w *Writer) schemaError(ctx context.Context, err error) error {
	s, rerr := w.cfg.Client.ReadSchema(ctx)
	switch {
	case rerr != nil: // can't tell: the schema error stands
	case !hasDefinition(s, w.cfg.Client.ns.Type(view.TypeProjector)):
		return fmt.Errorf("%w (its schema is gone too: %w)", ErrReset, err)
	case errors.Is(w.leaseError(ctx), ErrReset):
		return fmt.Errorf("%w (the schema was applied again since: %w)", ErrReset, err)
	}
	return fmt.Errorf("%w: %w", ErrSchema, err)
}

// ErrProgressMoved: the stored cursor or markers are not the ones this
// consumer wrote last, though it still holds the lease: SpiceDB was
// restored from a backup (or someone wrote them). The run must start again
// from what is stored.
var ErrProgressMoved = errors.New("spice: the stored cursor is not the one this consumer wrote (SpiceDB restored from a backup?)")

// progressError re-reads the progress after a failed precondition and
// returns ErrProgressMoved when a progress tuple the write replaces is not
// stored.
func (w *Writer) progressError(ctx context.Context, replaced []view.Tuple) error {
	st, err := w.cfg.Client.ReadProjector(ctx, w.cfg.Name)
	if err != nil {
		return fmt.Errorf("spice: re-read progress after a failed precondition: %w", err)
	}
	stored := map[view.Tuple]bool{}
	if st.HeartbeatMs != 0 {
		stored[view.HeartbeatTuple(w.cfg.Name, st.HeartbeatMs)] = true
	}
	p := st.Progress
	for _, t := range []struct {
		seq int64
		t   view.Tuple
	}{
		{p.Cursor, view.CursorTuple(w.cfg.Name, p.Cursor)},
		{p.Rewind, view.MarkerTuple(w.cfg.Name, view.RelRewind, p.Rewind)},
		{p.Rebuild, view.MarkerTuple(w.cfg.Name, view.RelRebuild, p.Rebuild)},
	} {
		if t.seq != checkpoint.None {
			stored[t.t] = true
		}
	}
	for _, t := range replaced {
		if !stored[t] {
			return fmt.Errorf("%w: %s is not stored (stored cursor %d)", ErrProgressMoved, t, p.Cursor)
		}
	}
	return nil
}

// leaseError re-reads the lease after a failed precondition and says why.
func (w *Writer) leaseError(ctx context.Context) error {
	st, err := w.cfg.Client.ReadProjector(ctx, w.cfg.Name)
	if err != nil {
		return fmt.Errorf("spice: re-read lease after a failed precondition: %w", err)
	}
	switch {
	case st.Holder == w.cfg.Holder && w.cfg.Epoch != checkpoint.None && st.Epoch != w.cfg.Epoch:
		return fmt.Errorf("%w: another source took a repo over (epoch %d, this writer has %d)", ErrOwnership,
			st.Epoch, w.cfg.Epoch)
	case st.Holder == w.cfg.Holder:
		return nil
	case st.Empty():
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
func (w *Writer) DryRun(ctx context.Context, updates []view.Update) error {
	if len(updates) == 0 {
		return nil
	}
	_, err := w.cfg.Client.write(ctx, updates, []*v1.Precondition{mustMatch(view.HolderTuple(w.cfg.Name, dryRunHolder))})
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
	updates := []view.Update{{Op: view.OpDelete, Tuple: view.HolderTuple(w.cfg.Name, w.cfg.Holder)}}
	if w.hb != 0 {
		updates = append(updates, view.Update{Op: view.OpDelete, Tuple: view.HeartbeatTuple(w.cfg.Name, w.hb)})
	}
	_, err := w.cfg.Client.write(ctx, updates, []*v1.Precondition{mustMatch(view.HolderTuple(w.cfg.Name, w.cfg.Holder))})
	if err != nil {
		return fmt.Errorf("spice: release lease: %w", err)
	}
	w.dead = ErrNotHolder
	return nil
}
