package projector

import (
	"errors"
	"log/slog"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/view"
)

// Account statuses as stored. Active is stored as "active" (with its seq)
// and kept as "" in memory.
const (
	statusActive  = "active"
	statusDeleted = "deleted"
)

// normalizeStatus maps an #account event to "" (active), "deleted", or a
// withdrawn status from a closed set (it becomes part of an object ID).
func normalizeStatus(active bool, status string) string {
	if active {
		return ""
	}
	switch status {
	case "deleted", "deactivated", "takendown", "suspended", "desynchronized", "throttled":
		return status
	}
	return "inactive"
}

// decide takes the decision for one event, in per-DID stream order.
func (a *applier) decide(ev *firehose.Event) error {
	e := a.e
	d := e.state(ev.DID)
	if e.log.Enabled(a.ctx, slog.LevelDebug) {
		e.log.Debug("event", "seq", ev.Seq, "kind", ev.Kind.String(), "did", ev.DID, "rev", ev.Rev, "since", ev.Since,
			"ops", len(ev.Ops), "resyncing", d.resync != nil, "known_rev", d.rev, "status", d.status)
	}
	if d.resync != nil {
		a.hold(d, ev)
		return nil
	}
	if e.isForeign(d) {
		a.decideForeign(d, ev)
		return nil
	}
	if ev.Kind != firehose.KindIdentity && ev.Seq <= e.rewind && !a.rewound[ev.DID] {
		a.rewound[ev.DID] = true
		a.startResync(d, ev, TriggerRewind)
		return nil
	}
	switch ev.Kind {
	case firehose.KindCommit:
		return a.decideCommit(d, ev)
	case firehose.KindSync:
		return a.decideSync(d, ev)
	case firehose.KindAccount:
		return a.decideAccount(d, ev)
	default:
		a.settle(ev, nil)
	}
	return nil
}

// decideForeign handles an event of a repo another source owns. Account
// statuses there change nothing: they are this source's word on a repo it
// no longer serves (the old PDS of a migrated account deactivating it). An
// event that says this source's PDS serves the repo now (a commit, a sync,
// an activation) starts a claim: a resync from this source's PDS that takes
// the repo over only if the PDS serves it as active.
func (a *applier) decideForeign(d *didState, ev *firehose.Event) {
	switch {
	case ev.Kind == firehose.KindCommit, ev.Kind == firehose.KindSync,
		ev.Kind == firehose.KindAccount && ev.Active:
		a.startResync(d, ev, TriggerClaim)
		// This stream activating the account may take the repo over at
		// the stored rev; a rewind's replay of an old activation may not.
		d.resync.activation = ev.Kind == firehose.KindAccount && ev.Seq > a.e.rewind
		d.resync.liveCommit = ev.Kind == firehose.KindCommit && ev.Seq > a.e.rewind
	default:
		a.settle(ev, nil)
	}
}

// hold keeps a live event of a repo being resynced; past the bound, it is
// dropped and one more resync is queued to cover it.
func (a *applier) hold(d *didState, ev *firehose.Event) {
	job := d.resync
	if len(job.held) < a.e.cfg.HeldPerRepo {
		job.held = append(job.held, ev)
		return
	}
	job.covered = append(job.covered, ev.Seq)
	if ev.Kind == firehose.KindAccount && ev.Active && ev.Seq > a.e.rewind {
		job.againActivation = true // the next claim stands for it
	}
	if !job.again {
		a.e.log.Warn("too many events held during a resync; dropping them and resyncing again", "did", d.did,
			"held", len(job.held))
	}
	job.again = true
}

func (a *applier) decideCommit(d *didState, ev *firehose.Event) error {
	e := a.e
	if _, err := syntax.ParseTID(ev.Rev); err != nil {
		e.log.Warn("commit with an invalid rev skipped", "did", d.did, "seq", ev.Seq, "rev", view.Clip(ev.Rev))
		a.settle(ev, nil)
		return nil
	}
	if ev.Unverified != "" {
		// The stream's verifier refused the commit (a relay may have
		// altered it): none of its ops is applied or published, and its
		// rev is not taken; the repo is read from its PDS instead.
		if d.status != statusDeleted && (d.rev == "" || ev.Rev > d.rev) {
			e.log.Warn("a commit failed verification; resyncing the repo", "did", d.did, "seq", ev.Seq,
				"reason", ev.Unverified)
			a.startResync(d, ev, TriggerUnverified)
			return nil
		}
		e.log.Warn("a stale commit failed verification; ignored", "did", d.did, "seq", ev.Seq, "reason", ev.Unverified)
		a.settle(ev, nil)
		return nil
	}
	if ev.Unchecked {
		// The stream verifies commits but did not verify this one (it
		// carries no projected op, or is Malformed): its ops and rev are
		// the relay's word, and a forged far-future rev taken here would
		// make every later commit of the account look stale. Its rev is
		// never taken (the account's next verified commit chains from the
		// last verified rev or resyncs as a gap); a fresh Malformed or
		// tooBig one resyncs below, and its ops are not applied even when
		// the resync fails (resyncWrites).
		fresh := d.status != statusDeleted && (d.rev == "" || ev.Rev > d.rev)
		switch {
		case !fresh || (len(ev.Ops) == 0 && ev.Malformed == "" && !ev.TooBig):
			a.settle(ev, nil)
			return nil
		case ev.Malformed == "" && !ev.TooBig:
			// Ops no verifier saw (the client verifies every commit with
			// one): read the repo instead.
			a.startResync(d, ev, TriggerUnverified)
			return nil
		}
	}
	if d.status != statusDeleted && (d.rev == "" || ev.Rev > d.rev) {
		if ev.Malformed != "" {
			// The stream could not read every op of this commit: read the
			// repo instead of applying part of it.
			e.log.Warn("a commit has an op that can't be read; resyncing the repo", "did", d.did, "seq", ev.Seq,
				"reason", ev.Malformed)
			a.startResync(d, ev, TriggerMalformed)
			return nil
		}
		for i := range ev.Ops {
			if op := &ev.Ops[i]; unreadable(op.Err) && e.cfg.Rules.Projects(op.Collection) {
				// The record's content is unknown, not invalid: read the repo
				// instead of guessing (the reference PDS can lose a block
				// shared by identical records).
				e.log.Warn("a commit lacks a record's block; resyncing the repo", "did", d.did, "seq", ev.Seq,
					"path", view.Clip(op.Path()), "reason", op.Err.Reason)
				a.startResync(d, ev, TriggerUnreadable)
				return nil
			}
		}
	}
	changes := a.commitChanges(d, ev)
	fresh := d.status != statusDeleted && (d.rev == "" || ev.Rev > d.rev)
	if fresh && (ev.TooBig || (d.rev != "" && ev.Since != d.rev)) {
		// A gap: the resync decides the repo, and counts what it rejects.
		e.log.Info("gap in a repo's revs; resyncing it", "did", d.did, "seq", ev.Seq, "since", ev.Since,
			"applied_rev", d.rev, "too_big", ev.TooBig)
		a.startResync(d, ev, TriggerGap)
		return nil
	}
	a.countRejections(ev, changes)
	if d.status == statusDeleted {
		e.log.Warn("commit for a deleted repo ignored", "did", d.did, "seq", ev.Seq)
		a.settle(ev, changes)
		return nil
	}
	if d.rev != "" && ev.Rev <= d.rev {
		e.cfg.Metrics.duplicate()
		for i := range changes {
			changes[i].Duplicate = true
		}
		a.settle(ev, changes)
		return nil
	}
	l, err := e.lineageOf(a.ctx, d)
	if err != nil {
		return err
	}
	units := a.recordUnits(d, l, changes)
	if unitsLen(units) == 0 && d.known && d.owner == e.self() && e.cfg.RevFlushAfter > 0 {
		a.deferRev(d, ev, changes)
		return nil
	}
	a.commitUnits(d, ev, units, a.setRev(d, l, ev.Rev), changes, ev.Rev)
	return nil
}

// recordUnits diffs each projected record of a commit against its lineage:
// what it produces now (nothing when rejected or deleted) against what it
// produced before.
func (a *applier) recordUnits(d *didState, l *lineage, changes []view.Change) []unit {
	var units []unit
	for i := range changes {
		c := &changes[i]
		if !c.Projected {
			continue
		}
		want := c.Produces
		if c.Rejected != "" {
			want = nil
		}
		units = append(units, l.recordChange(d.did, c.Collection+"/"+c.RKey, want, d.active(), nil))
		for _, t := range want {
			if l.parentCycle(t) {
				// Only the repo's own checks can suffer (SpiceDB fails
				// them closed); the record stays as written.
				a.e.cfg.Metrics.cycle()
				a.e.log.Warn("parent relation closes a cycle in the repo's space tree",
					"uri", "at://"+d.did+"/"+c.Collection+"/"+c.RKey, "seq", c.Seq)
			}
		}
	}
	return units
}

// changes turns a commit's ops into Changes (commitChanges), with
// rejections logged and counted.
func (a *applier) changes(d *didState, ev *firehose.Event) []view.Change {
	out := a.commitChanges(d, ev)
	a.countRejections(ev, out)
	return out
}

// countRejections logs and counts the rejected projected records of a
// commit's changes.
func (a *applier) countRejections(ev *firehose.Event, changes []view.Change) {
	for _, c := range changes {
		if c.Rejected != "" && c.Projected {
			a.e.cfg.Metrics.reject(c.Rejected)
			a.e.log.Warn("record rejected", "uri", "at://"+ev.DID+"/"+c.Collection+"/"+c.RKey, "reason", string(c.Rejected),
				"detail", view.Clip(c.RejectDetail), "seq", ev.Seq)
		}
	}
}

// commitChanges turns a commit's ops into Changes: the pure projection of
// each record under the rules (nothing is logged or counted).
func (a *applier) commitChanges(d *didState, ev *firehose.Event) []view.Change {
	e := a.e
	out := make([]view.Change, 0, len(ev.Ops))
	for i, op := range ev.Ops {
		c := view.Change{Seq: ev.Seq, OpIndex: i, DID: ev.DID, Rev: ev.Rev, Time: ev.Time, Collection: op.Collection,
			RKey: op.RKey, Action: string(op.Action), Projected: e.cfg.Rules.Projects(op.Collection)}
		if op.Action != firehose.ActionDelete {
			c.CID = op.CID.String()
			c.Record = op.Record
		}
		switch {
		case op.Action == firehose.ActionDelete:
		case op.Err != nil:
			c.Rejected, c.RejectDetail = view.Reason(op.Err.Reason), op.Err.Detail
		case c.Projected:
			c.Produces, c.Rejected, c.RejectDetail = a.project(d.did, op.Collection, op.RKey, op.Record)
		}
		out = append(out, c)
	}
	return out
}

// project applies the rules and the poison set to one record.
func (a *applier) project(did, collection, rkey string, value map[string]any) ([]view.Tuple, view.Reason, string) {
	tuples, err := a.e.cfg.Rules.Project(did, collection, rkey, value)
	if err != nil {
		var rj *view.Rejection
		if errors.As(err, &rj) {
			return nil, rj.Reason, rj.Detail
		}
		return nil, view.ReasonMalformed, err.Error()
	}
	if a.e.cfg.Poison.Len() > 0 {
		rid := view.RecordID(did, collection, rkey)
		for _, t := range tuples {
			if a.e.cfg.Poison.Has(t) || a.e.cfg.Poison.Has(view.LineageTuple(t, rid)) {
				return nil, view.ReasonSpiceDBRefused, "SpiceDB refused " + t.String()
			}
		}
	}
	return tuples, "", ""
}

// setRev moves the repo's stored rev, when the repo has (or now gets)
// bookkeeping; repos that produce nothing stay out of SpiceDB.
func (a *applier) setRev(d *didState, l *lineage, rev string) unit {
	d.rev = rev
	if !d.known && l.size() == 0 {
		return nil
	}
	a.e.markKnown(d)
	return a.storeRev(d)
}

// storeRev rewrites the repo's rev tuple to its newest applied rev. The
// commits whose rev was deferred are covered by it: place releases their
// hold with the batch that stores it.
func (a *applier) storeRev(d *didState) unit {
	var u unit
	if d.placedRev != "" && d.placedRev != d.rev {
		u = append(u, view.Update{Op: view.OpDelete, Tuple: view.RevTuple(d.did, d.placedRev)})
	}
	u = append(u, view.Update{Op: view.OpTouch, Tuple: view.RevTuple(d.did, d.rev)})
	d.placedRev = d.rev
	return u
}

// dropRev removes the repo's rev tuple (the repo is gone).
func (a *applier) dropRev(d *didState) unit {
	var u unit
	if d.placedRev != "" {
		u = unit{{Op: view.OpDelete, Tuple: view.RevTuple(d.did, d.placedRev)}}
	}
	d.rev, d.placedRev = "", ""
	return u
}

// deferRev applies a commit of a repo with bookkeeping that changed no
// projected relationship without a write of its own: the rev moves in
// memory (gap detection sees it at once) and rides, collapsed per repo,
// with the repo's next write, or is flushed (flushHeld). Until then the
// commit holds the stored cursor below it, so a crash replays it and the
// stored rev never lags behind the cursor (DESIGN §4).
func (a *applier) deferRev(d *didState, ev *firehose.Event, changes []view.Change) {
	e := a.e
	d.rev = ev.Rev
	if d.holdSeq == 0 {
		d.holdSeq, d.holdAt = ev.Seq, time.Now()
		e.cfg.Progress.Hold(ev.Seq)
		a.held = append(a.held, heldRev{d: d, seq: ev.Seq})
		a.heldRepos++
		e.cfg.Metrics.setHeld(a.heldRepos)
	}
	e.cfg.Metrics.revDeferred()
	// Read-your-writes: the commit changed nothing in the view, so it is
	// visible once the repo's earlier writes are.
	if d.lastBatch > e.committed.Load() {
		a.pending.noteRev(d.did, ev.Rev)
	} else {
		e.applied.commit(map[string]string{d.did: ev.Rev}, e.Token())
	}
	a.settle(ev, changes)
}

// heldRev is a repo whose rev is deferred, in the order the holds began
// (an entry whose seq is no longer the repo's holdSeq is stale).
type heldRev struct {
	d   *didState
	seq int64
}

// release ends d's hold with batch b: b stores d's newest rev.
func (a *applier) release(d *didState, b *batch) {
	if d.holdSeq == 0 || d.placedRev != d.rev {
		return
	}
	b.release = append(b.release, d.holdSeq)
	d.holdSeq = 0
	a.heldRepos--
	a.e.cfg.Metrics.setHeld(a.heldRepos)
}

// flushHeld writes deferred revs on their own: those older than
// RevFlushAfter (and the oldest past maxHeldEntries), or all of them.
func (a *applier) flushHeld(now time.Time, all bool) {
	n := 0
	for len(a.held) > 0 {
		h := a.held[0]
		d := h.d
		if d.holdSeq != h.seq {
			a.held = a.held[1:] // released by a write of the repo
			continue
		}
		if !all && now.Sub(d.holdAt) < a.e.cfg.RevFlushAfter && len(a.held) <= maxHeldEntries {
			break
		}
		a.held = a.held[1:]
		a.place(nil, a.storeRev(d), nil, d)
		n++
	}
	if len(a.held) == 0 {
		a.held = nil
	}
	a.e.cfg.Metrics.revsFlushed(n)
}

// commitUnits places an event's units (final last) and completes the event
// with the batch holding them.
func (a *applier) commitUnits(d *didState, ev *firehose.Event, units []unit, final unit, changes []view.Change, rev string) {
	if unitsLen(units)+len(final) == 0 {
		if rev != "" && d.known {
			a.pending.noteRev(d.did, rev)
		}
		a.settle(ev, changes)
		return
	}
	b := a.place(units, final, nil, d)
	b.seqs = append(b.seqs, ev.Seq)
	b.events++
	b.changes = append(b.changes, changes...)
	b.noteRev(d.did, rev)
	if ev.Time > b.newestTime {
		b.newestTime = ev.Time
	}
	a.e.cfg.Metrics.eventApplied(ev.Kind.String())
}

func (a *applier) decideSync(d *didState, ev *firehose.Event) error {
	if d.status == statusDeleted {
		a.settle(ev, nil)
		return nil
	}
	if d.rev != "" && ev.Rev <= d.rev {
		a.e.cfg.Metrics.duplicate()
		a.settle(ev, nil)
		return nil
	}
	if !d.known && ev.SyncData.Defined() && ev.SyncData.Equals(a.e.emptyTree) {
		a.settle(ev, nil) // an empty repo (a new account): nothing to project
		return nil
	}
	a.startResync(d, ev, TriggerSync)
	return nil
}

func (a *applier) decideAccount(d *didState, ev *firehose.Event) error {
	e := a.e
	if d.known && ev.Seq <= d.statusSeq {
		e.cfg.Metrics.duplicate()
		a.settle(ev, nil)
		return nil
	}
	next := normalizeStatus(ev.Active, ev.Status)
	if next == d.status {
		if d.known {
			// Nothing to withdraw or restore, but the status tuple moves
			// to this event's seq: a resync that ran while the stream was
			// behind (after a crash, say) may have stored this status
			// under an earlier seq, and the bookkeeping must not depend
			// on when resyncs happened.
			a.commitUnits(d, ev, nil, a.setStatus(d, statusOrActive(next), ev.Seq), nil, "")
			return nil
		}
		a.settle(ev, nil)
		return nil
	}
	l, err := e.lineageOf(a.ctx, d)
	if err != nil {
		return err
	}
	prev := d.status
	var units []unit
	switch {
	case next == "":
		// Back to active: a resync restores the data (and catches up
		// anything missed while the repo was away). The status is stored
		// with the resync's last write, not before: a crash in between
		// must leave the activation to be replayed.
		tail := a.setStatus(d, statusActive, ev.Seq)
		d.status = ""
		e.log.Info("repo active again; resyncing to restore it", "did", d.did, "was", prev, "seq", ev.Seq)
		a.startResync(d, ev, TriggerActivate)
		d.resync.tail = tail
		return nil
	case next == statusDeleted:
		// Everything the repo produced goes: data and lineage.
		for path := range l.byRecord {
			units = append(units, l.recordChange(d.did, path, nil, prev == "", nil))
		}
		if u := a.dropRev(d); len(u) > 0 {
			units = append(units, u)
		}
		e.log.Info("repo deleted; removing everything it produced", "did", d.did, "seq", ev.Seq)
	case prev == "":
		// Withdraw: data tuples go, lineage stays.
		for t := range l.producers {
			units = append(units, unit{{Op: view.OpDelete, Tuple: t}})
		}
		e.log.Info("repo not active; withdrawing its relationships", "did", d.did, "status", next, "seq", ev.Seq)
	}
	final := a.setStatus(d, next, ev.Seq)
	d.status = next
	a.commitUnits(d, ev, units, final, nil, "")
	return nil
}

// statusOrActive names a status as stored: "" (active) is "active".
func statusOrActive(status string) string {
	if status == "" {
		return statusActive
	}
	return status
}

// setStatus rewrites the repo's status tuple.
func (a *applier) setStatus(d *didState, status string, seq int64) unit {
	var u unit
	if d.hasStatus {
		u = append(u, view.Update{Op: view.OpDelete, Tuple: view.StatusTuple(d.did, statusOrActive(d.status), d.statusSeq)})
	}
	u = append(u, view.Update{Op: view.OpTouch, Tuple: view.StatusTuple(d.did, status, seq)})
	d.statusSeq, d.hasStatus = seq, true
	a.e.markKnown(d)
	return u
}
