package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/crashpoint"
	"github.com/spaces-authz/spaces-authz/view"
)

// shutdownGrace is how long the in-flight write may take after a shutdown
// begins (it is finished, not abandoned, when SpiceDB answers in time).
const shutdownGrace = 10 * time.Second

type batchResult struct {
	id  uint64
	err error
}

// applier is the state of the applier goroutine, which takes every
// decision: the open batch and the closed ones waiting for the writer, the
// rebuild in progress, and what the run's rewind has covered.
type applier struct {
	e        *Engine
	ctx      context.Context
	pending  *batch
	ready    []*batch
	batchSeq uint64
	rb       *rebuildRun
	finished []finishedRebuild
	// rewound are the repos resynced since the rewind marker (DESIGN §5).
	rewound map[string]bool
	// stale are extra status and rev tuples found at load (left by
	// versions that could leave one behind); the first batch deletes them.
	stale []view.Tuple
	// retries are the desynchronized repos and when each is tried again;
	// incomplete are rebuilds waiting for some of them.
	retries map[string]*retry
	// claimRetries are repos of other sources whose claim's getRepo
	// failed: the claim is asked again.
	claimRetries map[string]*retry
	incomplete   []*incompleteRebuild
	// held are the repos whose rev is deferred, oldest hold first
	// (heldRepos counts the live ones); decided says an event was decided
	// since the last tick (an idle stream flushes them all).
	held      []heldRev
	heldRepos int
	decided   bool
}

func (a *applier) newBatch() *batch {
	a.batchSeq++
	return newBatch(a.batchSeq, a.e.cfg.BatchUpdates)
}

// closePending moves the open batch to the ready queue.
func (a *applier) closePending() {
	if !a.pending.empty() {
		a.ready = append(a.ready, a.pending)
		a.pending = a.newBatch()
	}
}

// place adds the units of one decision to batches: into the open batch if
// they fit, else into a fresh one, else (larger than a call) split by unit
// across several, in order. final always lands in the last batch, after
// everything else: it holds the decision's bookkeeping (rev, status), which
// must not be stored before all of the decision's data is, or a crash in
// between would make the replay skip the event as already applied. The
// guards go with final. A repo with no owner recorded is claimed for this
// source in the same batch, on the condition that it is still unowned. It
// returns the batch that completes the decision.
func (a *applier) place(units []unit, final unit, guards []view.Guard, dids ...*didState) *batch {
	for _, d := range dids {
		if d.owner == "" {
			final = append(final[:len(final):len(final)], view.Update{Op: view.OpTouch, Tuple: view.SourceTuple(d.did, a.e.self())})
			guards = append(guards[:len(guards):len(guards)], view.Guard{Tuple: view.SourceTuple(d.did, a.e.self()), Absent: true})
			a.e.setOwner(d, a.e.self())
		}
	}
	n := unitsLen(units) + len(final)
	if !a.pending.fits(n) || len(a.pending.guards)+len(guards) > maxBatchGuards {
		a.closePending()
	}
	if !a.pending.fits(n) {
		for _, u := range units {
			if !a.pending.fits(len(u)) {
				a.closePending()
			}
			a.pending.addUnit(u)
		}
		units = nil
		if !a.pending.fits(len(final)) {
			a.closePending()
		}
	}
	for _, u := range units {
		a.pending.addUnit(u)
	}
	a.pending.addUnit(final)
	a.pending.guard(guards...)
	for _, d := range dids {
		d.lastBatch = a.pending.id
		a.release(d, a.pending)
	}
	return a.pending
}

func (e *Engine) applyLoop(ctx context.Context, writeCh chan<- *batch, doneCh <-chan batchResult) error {
	a := e.app
	a.ctx = ctx
	a.pending = a.newBatch()
	for _, t := range a.stale {
		e.log.Warn("deleting a stale repo status tuple", "relationship", t.String())
		a.pending.addUnit(unit{{Op: view.OpDelete, Tuple: t}})
	}
	a.stale = nil
	if e.cfg.Progress.Stored().Rebuild != checkpoint.None {
		// Whatever started it, the view is not known complete before it ends.
		a.startRebuild(rebuildRequest{reason: "a rebuild was interrupted", done: make(chan struct{}), resume: true, stale: true})
	}
	ticker := time.NewTicker(e.cfg.FlushEvery)
	defer ticker.Stop()
	busy, flush := false, false
	for {
		var out chan<- *batch
		var next *batch
		if !busy {
			switch {
			case len(a.ready) > 0:
				next = a.ready[0]
			case !a.pending.empty() || flush:
				next = a.pending
			}
			if next != nil {
				out = writeCh
			}
		}
		in, rs, rb, ls := e.in, e.resyncs, e.rebuild, e.listed
		if len(a.ready) > 0 {
			in, rs, rb, ls = nil, nil, nil, nil // a full batch is waiting: stop taking work
		}
		select {
		case <-ctx.Done():
			return nil
		case ev := <-in:
			a.decided = true
			e.dequeued(ev.DID)
			if err := a.decide(ev); err != nil {
				return err
			}
			if len(a.pending.seqs) > 0 {
				crashpoint.Hit(crashpoint.MidBatch)
			}
		case r := <-rs:
			crashpoint.Hit(crashpoint.DuringResync)
			if err := a.applyResync(r); err != nil {
				return err
			}
		case req := <-rb:
			a.startRebuild(req)
		case r := <-ls:
			a.listed(r)
		case out <- next:
			busy, flush = true, false
			if len(a.ready) > 0 && next == a.ready[0] {
				a.ready = a.ready[1:]
			} else {
				a.pending = a.newBatch()
			}
		case res := <-doneCh:
			busy = false
			if res.err != nil {
				return res.err
			}
			a.notifyFinished()
			e.evict()
		case now := <-ticker.C:
			flush = true
			a.retryDue(now)
			a.flushHeld(now, !a.decided)
			a.decided = false
		}
	}
}

func (e *Engine) writeLoop(ctx context.Context, writeCh <-chan *batch, doneCh chan<- batchResult, appDone <-chan struct{}) error {
	// Writes outlive the run context by shutdownGrace so that a batch in
	// flight when a shutdown starts is finished rather than abandoned.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(shutdownGrace, cancel) })
	defer stop()
	for {
		select {
		case <-ctx.Done():
			<-appDone // the applier's state is the writer's from here on
			return e.finalFlush(wctx)
		case b := <-writeCh:
			err := e.write(wctx, b)
			select {
			case doneCh <- batchResult{id: b.id, err: err}:
			case <-ctx.Done():
			}
			if err != nil {
				return err
			}
		}
	}
}

// finalFlush stores the deferred revs it may and the watermark reached, so
// a clean restart replays nothing that was applied. It runs once the
// applier has stopped.
func (e *Engine) finalFlush(ctx context.Context) error {
	e.flushHeldAtStop(ctx)
	step := e.cfg.Progress.Step(checkpoint.NoMarkers())
	if step.Empty() {
		return nil // nothing moved, or a first run stopped before its rebuild marker was stored
	}
	if _, err := e.cfg.Writer.Write(ctx, nil, step.Updates(), nil); err != nil {
		if !errors.Is(err, context.Canceled) {
			e.log.Warn("final cursor write failed; the next start replays from the previous cursor", "err", err)
		}
		return nil
	}
	e.cfg.Progress.Committed(step)
	return nil
}

// flushHeldAtStop writes the deferred revs of repos whose every placed
// write has committed (the batches still waiting are abandoned, and their
// repos' revs with them: their events replay), and releases their holds.
func (e *Engine) flushHeldAtStop(ctx context.Context) {
	a := e.app
	committed := e.committed.Load()
	var ups []view.Update
	var rel []int64
	flush := func() bool {
		if len(ups) == 0 {
			return true
		}
		if _, err := e.cfg.Writer.Write(ctx, ups, nil, nil); err != nil {
			if !errors.Is(err, context.Canceled) {
				e.log.Warn("writing deferred revs at shutdown failed; the next start replays their commits", "err", err)
			}
			return false
		}
		e.cfg.Progress.Release(rel...)
		e.cfg.Metrics.revsFlushed(len(rel))
		e.cfg.Metrics.setHeld(a.heldRepos)
		ups, rel = ups[:0], rel[:0]
		return true
	}
	for _, h := range a.held {
		d := h.d
		if d.holdSeq != h.seq || d.lastBatch > committed || d.owner != e.self() {
			continue
		}
		if len(ups)+2 > e.cfg.BatchUpdates && !flush() {
			return
		}
		ups = append(ups, a.storeRev(d)...)
		rel = append(rel, d.holdSeq)
		d.holdSeq = 0
		a.heldRepos--
	}
	flush()
}

// write commits one batch with the progress step it carries, then settles
// its events (after fan-out, when on).
func (e *Engine) write(ctx context.Context, b *batch) error {
	ups := b.updates()
	step := e.cfg.Progress.Step(b.markers)
	tok, err := e.cfg.Writer.Write(ctx, ups, step.Updates(), b.guards)
	if err != nil {
		if e.cfg.Writer.Refused(err) {
			return e.isolate(ctx, ups, err)
		}
		if ctx.Err() != nil {
			return nil // shutdown: the batch is abandoned whole; its events replay
		}
		return err
	}
	e.cfg.Progress.Committed(step)
	e.cfg.Progress.Release(b.release...)
	if tok != "" {
		e.token.Store(&tok)
	}
	if e.log.Enabled(ctx, slog.LevelDebug) {
		lines := make([]string, len(ups))
		for i, u := range ups {
			lines[i] = u.Op.String() + " " + u.Tuple.String()
		}
		e.log.Debug("batch committed", "batch", b.id, "seqs", b.seqs, "updates", lines,
			"cursor", step.After().Cursor)
	}
	e.committed.Store(b.id)
	e.applied.commit(b.revs, e.Token())
	e.status.applied(b)
	tracker := e.tracker
	finish := func() {
		for _, s := range b.seqs {
			tracker.Done(s)
		}
	}
	if e.cfg.Publisher != nil && len(b.changes) > 0 {
		return e.cfg.Publisher.Publish(ctx, b.changes, e.Token(), finish)
	}
	finish()
	return nil
}

// isolate finds the relationships SpiceDB refuses by bisecting the batch
// with dry runs (nothing is applied), poisons them and asks for a restart.
func (e *Engine) isolate(ctx context.Context, ups []view.Update, cause error) error {
	bad, err := e.findRefused(ctx, ups)
	if err != nil {
		return fmt.Errorf("projector: isolate refused relationship: %w (SpiceDB said: %w)", err, cause)
	}
	attributable := false
	for _, u := range bad {
		e.log.Error("SpiceDB refused a relationship the rules allowed; rejecting the record that produces it (a bug: check the rules against the schema)",
			"relationship", u.Tuple.String(), "op", u.Op.String(), "err", cause)
		e.cfg.Poison.Add(u.Tuple)
		if t := u.Tuple.ResourceType; t == view.TypeSpace || t == view.TypeGroup || t == view.TypeLineage {
			attributable = true
		}
	}
	if !attributable {
		return fmt.Errorf("projector: SpiceDB refused bookkeeping relationships %v: %w", bad, cause)
	}
	return ErrRestart
}

func (e *Engine) findRefused(ctx context.Context, ups []view.Update) ([]view.Update, error) {
	if len(ups) == 1 {
		return ups, nil
	}
	mid := len(ups) / 2
	var out []view.Update
	for _, part := range [][]view.Update{ups[:mid], ups[mid:]} {
		err := e.cfg.Writer.DryRun(ctx, part)
		if err == nil {
			continue
		}
		if !e.cfg.Writer.Refused(err) {
			return nil, err
		}
		sub, err := e.findRefused(ctx, part)
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	if len(out) == 0 {
		return nil, errors.New("SpiceDB refuses the batch but none of its halves")
	}
	return out, nil
}

// settle completes an event that needs no write. Without fan-out it is
// done at once (the watermark still can't pass older events in flight);
// with fan-out it rides on the open batch so that its messages are
// published, in order, before it counts as done.
func (a *applier) settle(ev *firehose.Event, changes []view.Change) {
	a.e.cfg.Metrics.eventApplied(ev.Kind.String())
	if a.e.cfg.Publisher == nil {
		a.e.tracker.Done(ev.Seq)
		return
	}
	a.pending.seqs = append(a.pending.seqs, ev.Seq)
	a.pending.changes = append(a.pending.changes, changes...)
}
