package projector

import (
	"context"
	"errors"
	"slices"
	"sort"
	"time"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/backoff"
	"github.com/spaces-authz/spaces-authz/view"
)

// resyncJob is a repo resync in flight. The triggering event and every
// event dropped while it ran complete only when its last write commits.
type resyncJob struct {
	trigger *firehose.Event // nil for a rebuild's resync
	reason  string
	held    []*firehose.Event
	covered []int64
	again   bool
	// tail is bookkeeping decided with the trigger (an activation's status)
	// that is stored with the resync's last write.
	tail unit
	// rebuild: part of a rebuild.
	rebuild bool
	// requested: a repo an admin or reconcile request named, which no
	// event or listing says this PDS hosts.
	requested bool
	// claim: another source owns the repo; the resync takes it over if this
	// source's PDS serves it as active, and writes nothing otherwise.
	claim bool
	// activation: the claim stands for this stream's own #account active
	// for the repo (not a replay of a rewind), which may take it over at
	// the stored rev (mayClaim).
	activation bool
	// pending: a claim of this repo is pending behind an activation seen
	// earlier (repo:<did>#claim@projector:<self>); it counts as one only
	// while that tuple is still stored (mayClaim).
	pending bool
	// liveCommit: the claim stands for a #commit of this stream (not a
	// replay of a rewind).
	liveCommit bool
	// againActivation: an activation was among the events dropped while
	// this job ran; the next job (again) stands for it.
	againActivation bool
}

type resyncResult struct {
	did      string
	snap     *firehose.Snapshot
	data     []view.Tuple
	notFound bool
	inactive bool
	err      error
	// unreadable counts records the snapshot names without their block.
	unreadable int
	// A claim's fresh reads: the repo's stored bookkeeping and its owner's
	// epoch (checkpoint.None when none), both fully consistent.
	state view.RepoState
	epoch int64
}

// startResync fetches the repo in the background; its live events are held
// until the result is applied (DESIGN §3).
func (a *applier) startResync(d *didState, trigger *firehose.Event, reason string) {
	a.startJob(d, &resyncJob{trigger: trigger, reason: reason})
}

func (a *applier) startJob(d *didState, job *resyncJob) {
	e := a.e
	if e.isForeign(d) {
		// Whatever asked (an event, a rebuild, an admin resync), a repo
		// another source owns is only ever taken over, from fresh reads.
		job.claim = true
		e.dropLineage(d)
		// An activation seen on this stream whose claim has not completed
		// yet stands behind every claim of the repo until one completes.
		if r := a.claimRetries[d.did]; d.claimPending || (r != nil && r.activation) {
			job.pending = true
		}
	}
	d.resync = job
	e.cfg.Metrics.resync(job.reason)
	did, ctx := d.did, a.ctx
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		r := e.fetch(ctx, did, job)
		select {
		case e.resyncs <- r:
		case <-ctx.Done():
		}
	}()
}

var fetchSlots = struct{}{}

// fetch reads the repo (getRepo) and the data tuples SpiceDB holds under its
// prefix, retrying transient failures up to ResyncAttempts.
func (e *Engine) fetch(ctx context.Context, did string, job *resyncJob) *resyncResult {
	r := &resyncResult{did: did}
	select {
	case e.fetchSem <- fetchSlots:
	case <-ctx.Done():
		r.err = ctx.Err()
		return r
	}
	defer func() { <-e.fetchSem }()
	// The repo is pinned while it resyncs, so lineage loaded here stays.
	// (A claim reads it fresh once the PDS has answered.)
	if !job.claim {
		if err := e.ensureLineage(ctx, did); err != nil {
			r.err = err
			return r
		}
	}
	bo := backoff.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		if e.limiter != nil {
			if err := e.limiter.Wait(ctx); err != nil {
				r.err = err
				return r
			}
		}
		snap, err := e.cfg.Fetcher.GetRepo(ctx, did, e.cfg.Rules.Projects)
		switch {
		case err == nil:
			r.snap = snap
		case errors.Is(err, firehose.ErrRepoNotFound):
			r.notFound = true
		case errors.Is(err, firehose.ErrRepoInactive):
			r.inactive = true
		case ctx.Err() != nil:
			r.err = ctx.Err()
			return r
		case errors.Is(err, firehose.ErrRepoTooLarge):
			// Refused until the repo shrinks or the limit grows: no quick
			// retries; the repo is desynchronized and retried with backoff.
			r.err = err
			return r
		case attempt >= e.cfg.ResyncAttempts:
			r.err = err
			return r
		default:
			e.log.Warn("getRepo failed; retrying", "did", did, "attempt", attempt, "err", err)
			if bo.Wait(ctx) != nil {
				r.err = ctx.Err()
				return r
			}
			continue
		}
		break
	}
	if job.claim {
		return e.fetchClaim(ctx, r, bo)
	}
	bo.Reset()
	for {
		data, err := e.cfg.Store.LoadData(ctx, did, e.Token())
		if err == nil {
			r.data = data
			return r
		}
		e.log.Warn("reading a repo's relationships failed; retrying", "did", did, "err", err)
		if bo.Wait(ctx) != nil {
			r.err = ctx.Err()
			return r
		}
	}
}

// fetchClaim completes a claim's fetch once this source's PDS answered:
// when it serves the repo, the repo's lineage, data, bookkeeping and its
// owner's epoch are read fully consistent (the owner writes them, not us),
// so that the claim's guards name what is really stored.
func (e *Engine) fetchClaim(ctx context.Context, r *resyncResult, bo backoff.Backoff) *resyncResult {
	if r.snap == nil {
		return r // not served here (or not reachable): nothing to take over
	}
	bo.Reset()
	for {
		err := e.readClaim(ctx, r)
		if err == nil {
			return r
		}
		e.log.Warn("reading a repo to take it over failed; retrying", "did", r.did, "err", err)
		if bo.Wait(ctx) != nil {
			r.err = ctx.Err()
			return r
		}
	}
}

func (e *Engine) readClaim(ctx context.Context, r *resyncResult) error {
	state, err := e.cfg.Store.LoadRepo(ctx, r.did, "")
	if err != nil {
		return err
	}
	r.state, r.epoch = state, checkpoint.None
	if state.Source != "" && state.Source != e.self() {
		if r.epoch, err = e.cfg.Store.LoadEpoch(ctx, state.Source, ""); err != nil {
			return err
		}
	}
	entries, err := e.cfg.Store.LoadLineage(ctx, r.did, "")
	if err != nil {
		return err
	}
	if r.data, err = e.cfg.Store.LoadData(ctx, r.did, ""); err != nil {
		return err
	}
	e.installLineage(r.did, entries)
	return nil
}

// resyncWrite is what a finished resync writes: data and lineage units,
// the bookkeeping (final) that goes in the last of its writes, the guards
// that write needs, and the changes it publishes.
type resyncWrite struct {
	units   []unit
	final   unit
	guards  []view.Guard
	changes []view.Change
	// cleared: the repo was desynchronized and this write ends that.
	cleared bool
}

// applyResync diffs the repo's current records against lineage and against
// the data tuples under its prefix, and writes creates, updates and deletes
// (DESIGN §3). Then the events held meanwhile are decided in order.
func (a *applier) applyResync(r *resyncResult) error {
	e := a.e
	d := e.state(r.did)
	job := d.resync
	if job == nil {
		return nil
	}
	d.resync = nil
	var w resyncWrite
	storesClaim := false
	if job.pending && r.snap != nil && r.err == nil && !slices.Contains(r.state.Claims, e.self()) &&
		e.committed.Load() >= d.claimBatch {
		// Our stored claim is gone: another source's claim completed
		// since (it removes every pending claim). The activation behind
		// it was against an owner that no longer holds the repo.
		job.pending, d.claimPending = false, false
		if cr := a.claimRetries[d.did]; cr != nil {
			cr.activation = false
		}
	}
	switch {
	case job.claim && (r.snap == nil || r.err != nil):
		// This source's PDS does not serve the repo as active: it stays
		// the other source's, untouched. A fetch that failed is tried
		// again: the claim may be an activation the view must not lose.
		e.log.Debug("repo of another source not served here; not taking it over", "did", d.did, "owner", d.owner,
			"not_found", r.notFound, "inactive", r.inactive, "err", r.err)
		if r.err != nil && r.snap == nil && !r.notFound && !r.inactive {
			a.retryClaim(d, job.activation || job.pending)
			if job.activation && !d.claimPending {
				// Stored with the activation's completion, so that a
				// restart goes on with the claim (the cursor passes it).
				d.claimPending, storesClaim = true, true
				w.final = unit{{Op: view.OpTouch, Tuple: view.ClaimTuple(d.did, e.self())}}
			}
		} else {
			w.final = a.dropClaim(d)
		}
	case job.claim && !mayClaim(job, r, e.self()):
		// Served here, but this copy is not newer than what the view
		// holds: the old PDS of a migrated account that still serves it
		// (before it deactivates it, or for good), a replay, a rebuild.
		e.cfg.Metrics.claimRefused()
		e.log.Info("not taking a repo over: this PDS's copy is not newer than the stored one", "did", d.did,
			"owner", r.state.Source, "stored_rev", r.state.Rev, "rev_here", r.snap.Rev, "trigger", job.reason)
		w.final = a.dropClaim(d)
	default:
		delete(a.claimRetries, d.did)
		l, err := e.lineageOf(a.ctx, d)
		if err != nil {
			return err
		}
		if job.claim {
			w = a.claimWrites(d, l, job, r)
		} else {
			w = a.resyncWrites(d, l, job, r)
		}
	}
	a.completeResync(d, job, w)
	if storesClaim {
		d.claimBatch = d.lastBatch
	}
	if job.rebuild {
		n := 0
		if r.snap != nil {
			n = len(r.snap.Records)
		}
		a.rebuildResyncDone(d, n, errors.Is(r.err, firehose.ErrRepoTooLarge))
	}
	return a.releaseHeld(d, job)
}

// resyncWrites decides what a finished fetch writes for a repo this source
// owns (or that has no owner yet).
func (a *applier) resyncWrites(d *didState, l *lineage, job *resyncJob, r *resyncResult) resyncWrite {
	e := a.e
	w := resyncWrite{final: append(unit(nil), job.tail...)}
	trigSeq, trigTime := job.triggerSeqTime()
	switch {
	case r.err != nil && !d.known && job.trigger == nil && (!job.rebuild || job.requested):
		// An admin or reconcile resync of a DID the view never held, and
		// no event or listing says this PDS hosts it: a failure stores
		// nothing (a marker would make the stranger a repo of this view).
		e.cfg.Metrics.resyncFailed()
		e.log.Error("resync of a repo the view does not hold failed; nothing stored", "did", d.did,
			"trigger", job.reason, "err", r.err)
		return w
	case r.err != nil:
		e.cfg.Metrics.resyncFailed()
		e.log.Error("resync failed; the repo is desynchronized until a retry succeeds (applying the triggering event as it is)",
			"did", d.did, "trigger", job.reason, "err", r.err)
		w.final = append(w.final, a.markDesync(d, trigSeq)...)
		if ev := job.trigger; ev != nil && ev.Kind == firehose.KindCommit && ev.Unverified == "" && !ev.Unchecked {
			w.changes = a.changes(d, ev)
			w.units = a.recordUnits(d, l, w.changes)
			w.final = append(w.final, a.setRev(d, l, ev.Rev)...)
		}
		return w
	case r.notFound && !d.known:
		// A repo this view never held, which the PDS does not host: there
		// is nothing to remove, and nothing to remember (an inactive repo
		// is hosted: its status is kept so that its activation restores it).
		e.log.Info("resync: the PDS has no such repo and the view holds nothing of it", "did", d.did)
		return w
	case r.notFound && !e.mayRemove(d):
		// Stored before ownership existed, in a SpiceDB other sources
		// share: it may be another PDS's repo. This PDS's "no such repo"
		// is not its owner's word.
		e.log.Info("resync: the PDS has no such repo, and the view's copy has no owner recorded; leaving it", "did", d.did)
		return w
	case r.notFound:
		e.log.Info("resync: the PDS has no such repo; removing everything it produced", "did", d.did)
		w.units = a.removeAll(d, l, r.data)
		w.final = append(w.final, a.dropRev(d)...)
		if d.status != statusDeleted {
			w.final = append(w.final, a.setStatus(d, statusDeleted, max(d.statusSeq, trigSeq))...)
			d.status = statusDeleted
		}
		w.final = append(w.final, a.completeSnapshot(d)...)
	case r.inactive && d.known && !e.mayRemove(d):
		// As for "no such repo": an old PDS may keep a deactivated copy
		// of a repo another PDS serves now.
		e.log.Info("resync: the PDS says the repo is not active, and the view's copy has no owner recorded; leaving it",
			"did", d.did)
		return w
	case r.inactive:
		e.log.Info("resync: the PDS says the repo is not active; withdrawing it", "did", d.did)
		for _, t := range r.data {
			w.units = append(w.units, unit{{Op: view.OpDelete, Tuple: t}})
		}
		if d.status == "" {
			w.final = append(w.final, a.setStatus(d, "inactive", max(d.statusSeq, trigSeq))...)
			d.status = "inactive"
		}
		w.final = append(w.final, a.completeSnapshot(d)...)
	case d.known && !e.mayRemove(d) && d.rev != "" && r.snap.Rev < d.rev:
		// Stored before ownership, in a SpiceDB other sources share, at a
		// rev this PDS's copy has not reached: the old PDS of a migrated
		// account still serving its copy. Taking it would write stale
		// records back (the rule of a claim, mayClaim).
		e.cfg.Metrics.claimRefused()
		e.log.Info("resync: this PDS's copy of a repo with no owner recorded is older than the stored one; leaving it",
			"did", d.did, "stored_rev", d.rev, "rev_here", r.snap.Rev)
		return w
	default:
		if d.status != "" {
			// getRepo answered: the PDS serves the repo, so it is active
			// (its #account event may have been missed while no cursor
			// was stored). Restore it with this resync.
			e.log.Info("resync: the repo is served again; marking it active", "did", d.did, "was", d.status)
			w.final = append(w.final, a.setStatus(d, statusActive, max(d.statusSeq, trigSeq))...)
			d.status = ""
		}
		var diff []view.Change
		w.units, diff = a.resyncDiff(d, l, r, trigSeq, trigTime)
		w.changes = append(a.triggerChanges(d, job), diff...)
		w.final = append(w.final, a.setRev(d, l, r.snap.Rev)...)
		// A record the export names without its block is read again later:
		// the reference PDS can lose a block and write it back when an
		// identical record is written, which no event of this repo says.
		w.final = append(w.final, a.incompleteSnapshot(d, r.unreadable > 0, trigSeq)...)
	}
	if d.desync {
		w.final = append(w.final, a.clearDesync(d)...)
		w.cleared = true
	}
	return w
}

// mayClaim decides whether a claim whose snapshot this source's PDS served
// as active takes the repo over. Serving a repo is not proof of owning it:
// during a migration both PDSes serve it, and the old one may keep serving
// its copy for good. Revs are TIDs along the repo's one history, which the
// new PDS continues from the imported commit, so the copy that may take
// the repo over is a newer one. At the same rev (just after the import),
// or when the owner stores no rev to compare with (it never applied a
// commit, or the account was deleted there), only this source's own
// activation of the account moves it. So the old PDS's replays, rebuilds
// and retries never take a migrated repo back, nor undo the new PDS's
// takedown or deletion of it (DESIGN §4).
func mayClaim(job *resyncJob, r *resyncResult, self string) bool {
	st := r.state
	activation := job.activation || (job.pending && slices.Contains(st.Claims, self))
	switch {
	case st.Source == "":
		return true // nobody's: the first writer's (place guards it)
	case st.Rev == "" && st.Status == "":
		return true // the owner stores nothing of the account
	case st.Rev == "":
		// Nothing to compare with (the owner deleted the account): this
		// stream's activation, or a new commit on this PDS, moves it.
		return activation || job.liveCommit
	case r.snap.Rev > st.Rev:
		return true
	case r.snap.Rev < st.Rev:
		return false
	}
	return activation
}

// dropClaim ends d's pending claim: its retry goes, and the update that
// deletes this source's stored claim, if any, is returned.
func (a *applier) dropClaim(d *didState) unit {
	delete(a.claimRetries, d.did)
	if !d.claimPending {
		return nil
	}
	d.claimPending = false
	return unit{{Op: view.OpDelete, Tuple: view.ClaimTuple(d.did, a.e.self())}}
}

// claimWrites takes over a repo another source owned (or that had no owner
// recorded) because this source's PDS serves it as active: the migrated
// account's new PDS. The repo's bookkeeping is replaced by this source's
// (its revs and seqs are this stream's), its data is brought to the
// snapshot, and the old owner's epoch moves, which fails the old owner's
// writes in flight so that it reloads and leaves the repo alone. The write
// is guarded by what was read: the same owner, epoch, rev and status, so a
// change by the old owner in between fails it (spice.ErrOwnership) and the
// run restarts to read again.
func (a *applier) claimWrites(d *didState, l *lineage, job *resyncJob, r *resyncResult) resyncWrite {
	e := a.e
	self, st := e.self(), r.state
	w := resyncWrite{}
	trigSeq, trigTime := job.triggerSeqTime()
	if st.Source == "" {
		w.guards = append(w.guards, view.Guard{Tuple: view.SourceTuple(d.did, self), Absent: true})
	} else if st.Source != self {
		w.guards = append(w.guards, view.Guard{Tuple: view.SourceTuple(d.did, st.Source)})
		w.final = append(w.final, view.Update{Op: view.OpDelete, Tuple: view.SourceTuple(d.did, st.Source)})
		if r.epoch != checkpoint.None {
			w.guards = append(w.guards, view.Guard{Tuple: view.EpochTuple(st.Source, r.epoch)})
			w.final = append(w.final, view.Update{Op: view.OpDelete, Tuple: view.EpochTuple(st.Source, r.epoch)},
				view.Update{Op: view.OpTouch, Tuple: view.EpochTuple(st.Source, r.epoch+1)})
		}
	}
	w.final = append(w.final, view.Update{Op: view.OpTouch, Tuple: view.SourceTuple(d.did, self)})
	if st.Rev != "" {
		w.guards = append(w.guards, view.Guard{Tuple: view.RevTuple(d.did, st.Rev)})
	}
	for _, rev := range append([]string{st.Rev}, st.StaleRevs...) {
		if rev != "" {
			w.final = append(w.final, view.Update{Op: view.OpDelete, Tuple: view.RevTuple(d.did, rev)})
		}
	}
	if st.Status != "" {
		w.guards = append(w.guards, view.Guard{Tuple: view.StatusTuple(d.did, st.Status, st.StatusSeq)})
		w.final = append(w.final, view.Update{Op: view.OpDelete, Tuple: view.StatusTuple(d.did, st.Status, st.StatusSeq)})
	}
	for _, old := range st.StaleStatuses {
		w.final = append(w.final, view.Update{Op: view.OpDelete, Tuple: view.Tuple{ResourceType: view.TypeRepo,
			ResourceID: view.RepoID(d.did), Relation: view.RelStatus, SubjectType: view.TypeStatus, SubjectID: old}})
	}
	if st.Desync {
		w.final = append(w.final, view.Update{Op: view.OpDelete, Tuple: view.DesyncTuple(d.did, st.DesyncSeq)})
	}
	// Every pending claim goes with this one (ours, and other sources'
	// activations seen against the owner that no longer holds the repo).
	if d.claimPending && !slices.Contains(st.Claims, self) {
		w.final = append(w.final, view.Update{Op: view.OpDelete, Tuple: view.ClaimTuple(d.did, self)})
	}
	d.claimPending = false
	for _, src := range st.Claims {
		w.final = append(w.final, view.Update{Op: view.OpDelete, Tuple: view.ClaimTuple(d.did, src)})
	}
	if st.Incomplete {
		w.final = append(w.final, view.Update{Op: view.OpDelete, Tuple: view.IncompleteTuple(d.did, st.IncompleteSeq)})
	}
	e.log.Info("taking a repo over: this source's PDS serves it now", "did", d.did, "previous_owner", st.Source,
		"trigger", job.reason)
	e.cfg.Metrics.claimed()
	// From here on the repo is this source's, active, with no stored
	// bookkeeping but what this write stores.
	e.setOwner(d, self)
	d.rev, d.placedRev, d.status, d.statusSeq, d.hasStatus, d.desync = "", "", "", 0, false, false
	d.incomplete, d.incompleteSeq = false, 0
	var diff []view.Change
	w.units, diff = a.resyncDiff(d, l, r, trigSeq, trigTime)
	w.changes = append(a.triggerChanges(d, job), diff...)
	w.final = append(w.final, a.incompleteSnapshot(d, r.unreadable > 0, trigSeq)...)
	w.final = append(w.final, a.setStatus(d, statusActive, trigSeq)...)
	w.final = append(w.final, a.setRev(d, l, r.snap.Rev)...)
	return w
}

// triggerChanges are the ops of the commit that triggered a resync (a gap,
// an op the stream could not read, a record without its block), as that
// event's own changes: the resync decides what is written, but the fan-out
// still carries every op of every commit once under the event's ID, before
// the resync's diff (DESIGN §6).
func (a *applier) triggerChanges(d *didState, job *resyncJob) []view.Change {
	if ev := job.trigger; ev != nil && ev.Kind == firehose.KindCommit && ev.Unverified == "" && !ev.Unchecked {
		// An unverified (or unchecked) commit's ops are not the account's:
		// not published.
		return a.commitChanges(d, ev) // the resync's diff counts what it rejects
	}
	return nil
}

func (j *resyncJob) triggerSeqTime() (int64, string) {
	if j.trigger == nil {
		return 0, ""
	}
	return j.trigger.Seq, j.trigger.Time
}

// completeResync places a resync's writes and completes, with the batch
// holding the last of them, the events the resync stands for: its trigger
// and the live events dropped while it ran (unless they need another
// resync).
func (a *applier) completeResync(d *didState, job *resyncJob, w resyncWrite) {
	e := a.e
	written := unitsLen(w.units)+len(w.final) > 0
	b := a.pending
	if written {
		b = a.place(w.units, w.final, w.guards, d)
	}
	if w.cleared {
		a.desyncCleared(d.did, b)
	}
	b.changes = append(b.changes, w.changes...)
	if d.known {
		b.noteRev(d.did, d.rev)
	}
	var own []int64 // the seqs this resync completes
	if job.trigger != nil {
		own = append(own, job.trigger.Seq)
		b.events++
		if job.trigger.Time > b.newestTime {
			b.newestTime = job.trigger.Time
		}
		e.cfg.Metrics.eventApplied(job.trigger.Kind.String())
	}
	if !job.again {
		own = append(own, job.covered...)
		job.covered = nil
	}
	if e.cfg.Publisher == nil && !written {
		// Nothing to write: complete the resync's own events now, like a
		// settled event. (Not the rest of the open batch: its events are
		// done only once it commits.)
		for _, s := range own {
			e.tracker.Done(s)
		}
		return
	}
	b.seqs = append(b.seqs, own...)
}

// releaseHeld decides the live events held while the repo resynced, in
// order, and starts one more resync when events had to be dropped (it
// completes them).
func (a *applier) releaseHeld(d *didState, job *resyncJob) error {
	for _, ev := range job.held {
		if err := a.decide(ev); err != nil {
			return err
		}
	}
	if job.again {
		if d.resync == nil {
			a.startResync(d, nil, job.reason)
		}
		d.resync.activation = d.resync.activation || job.againActivation
		d.resync.covered = append(d.resync.covered, job.covered...)
	}
	return nil
}

// resyncDiff computes the updates that bring SpiceDB to the snapshot.
func (a *applier) resyncDiff(d *didState, l *lineage, r *resyncResult, seq int64, evTime string) ([]unit, []view.Change) {
	want := make(map[string][]view.Tuple, len(r.snap.Records))
	var changes []view.Change
	for _, rec := range r.snap.Records {
		path := rec.Path()
		if unreadable(rec.Err) {
			// The repo names this record but the CAR lacks its block (or
			// the block is corrupt): the PDS served an incomplete export.
			// Its content is unknown, not invalid, so what it produced
			// stays; the next resync or reconcile reads it again. (The
			// reference PDS has been seen to drop a block shared by two
			// identical records when one of them is deleted, until an
			// identical record brings it back.)
			a.e.cfg.Metrics.unreadableRecord()
			r.unreadable++
			a.e.log.Warn("resync: a record's block is missing from the snapshot; keeping what it produced",
				"uri", "at://"+d.did+"/"+path, "reason", rec.Err.Reason, "detail", view.Clip(rec.Err.Detail))
			want[path] = tupleList(l.byRecord[path])
			continue
		}
		c := view.Change{Seq: seq, DID: d.did, Rev: r.snap.Rev, Time: evTime, Collection: rec.Collection, RKey: rec.RKey,
			CID: rec.CID.String(), Record: rec.Value, Projected: true, Resync: true}
		if rec.Err != nil {
			c.Rejected, c.RejectDetail = view.Reason(rec.Err.Reason), rec.Err.Detail
		} else {
			c.Produces, c.Rejected, c.RejectDetail = a.project(d.did, rec.Collection, rec.RKey, rec.Value)
		}
		if c.Rejected != "" {
			a.e.cfg.Metrics.reject(c.Rejected)
			a.e.log.Warn("record rejected", "uri", "at://"+d.did+"/"+path, "reason", string(c.Rejected),
				"detail", view.Clip(c.RejectDetail), "resync", true)
		}
		want[path] = c.Produces
		old, had := l.byRecord[path]
		switch {
		case !had && len(c.Produces) > 0:
			c.Action = string(firehose.ActionCreate)
			changes = append(changes, c)
		case had && !sameTuples(old, c.Produces):
			c.Action = string(firehose.ActionUpdate)
			changes = append(changes, c)
		}
	}
	var paths []string
	for p := range l.byRecord {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	for p := range want {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var units []unit
	for _, p := range paths {
		w, ok := want[p]
		if !ok {
			coll, rkey := splitPath(p)
			changes = append(changes, view.Change{Seq: seq, DID: d.did, Rev: r.snap.Rev, Time: evTime, Collection: coll,
				RKey: rkey, Action: string(firehose.ActionDelete), Projected: true, Resync: true})
		}
		units = append(units, l.recordChange(d.did, p, w, d.active(), nil))
	}
	// Data under the repo's prefix that no record produces (written behind
	// the projector's back, or left by an older rules file) goes too.
	for _, t := range r.data {
		if _, produced := l.producers[t]; !produced || !d.active() {
			units = append(units, unit{{Op: view.OpDelete, Tuple: t}})
		}
	}
	return units, changes
}

// removeAll deletes everything a repo produced: lineage, and data whether
// lineage names it or not.
func (a *applier) removeAll(d *didState, l *lineage, data []view.Tuple) []unit {
	var units []unit
	var paths []string
	for p := range l.byRecord {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		units = append(units, l.recordChange(d.did, p, nil, true, nil))
	}
	for _, t := range data {
		units = append(units, unit{{Op: view.OpDelete, Tuple: t}})
	}
	return units
}

// unreadable reports whether a snapshot record's error means its content
// could not be read (as opposed to content that is malformed).
func unreadable(err *firehose.OpError) bool {
	return err != nil && (err.Reason == firehose.ReasonMissingBlock || err.Reason == firehose.ReasonCIDMismatch)
}

func tupleList(set []view.Tuple) []view.Tuple {
	out := slices.Clone(set)
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func sameTuples(old, now []view.Tuple) bool {
	if len(old) != len(now) {
		return false
	}
	for _, t := range now {
		if !slices.Contains(old, t) {
			return false
		}
	}
	return true
}
