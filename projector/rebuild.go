package projector

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/backoff"
)

type rebuildRequest struct {
	reason string
	// dids to resync; nil means every repo the PDS lists and every repo the
	// view knows (those no longer listed are removed).
	dids []string
	// done is closed once every resync of the rebuild is committed.
	done chan struct{}
	// resume: a rebuild marker is already stored (an interrupted rebuild).
	resume bool
	// stale: the view is incomplete until this rebuild commits (a first
	// run, a reset, events the PDS no longer has): lag counts from its
	// start (Config.OnStale).
	stale bool
}

// rebuildRun is the rebuild in progress (DESIGN §5).
type rebuildRun struct {
	reason string
	// stale: a request of the run said the view is incomplete until it ends.
	stale   bool
	full    bool
	listing bool
	queue   []string
	// known are the repos of this source the view held when the listing
	// began: only those can be gone (a repo the stream brought in since
	// may not be listed yet).
	known map[string]bool
	// desynced are the rebuild's repos whose resync failed: the rebuild is
	// not done while any is left.
	desynced map[string]bool
	// requested are the queued repos an admin or reconcile request named
	// (not listed by the PDS).
	requested map[string]bool
	inFlight  int
	total     int
	done      int
	records   int
	started   time.Time
	lastLog   time.Time
	marker    int64 // stored marker value, or checkpoint.None
	waiters   []chan struct{}
}

type listResult struct {
	repos []firehose.RepoInfo
	err   error
}

type finishedRebuild struct {
	batch   uint64
	waiters []chan struct{}
	stale   bool
}

// Rebuild resyncs every repo from getRepo snapshots (dids nil), or the
// given repos, while the stream goes on; repos the view knows but the PDS
// no longer lists are removed. Checks keep answering meanwhile: it diffs
// against the live view, nothing is emptied first. The returned channel is
// closed when every resync is committed.
func (e *Engine) Rebuild(ctx context.Context, reason string, dids []string) (<-chan struct{}, error) {
	return e.rebuild1(ctx, rebuildRequest{reason: reason, dids: dids, done: make(chan struct{})})
}

// RebuildIncompleteView is a full Rebuild of a view known to be incomplete
// (a first run, a reset SpiceDB): until it commits, the view is stale since
// its start (Config.OnStale), so lag says so.
func (e *Engine) RebuildIncompleteView(ctx context.Context, reason string) (<-chan struct{}, error) {
	return e.rebuild1(ctx, rebuildRequest{reason: reason, done: make(chan struct{}), stale: true})
}

func (e *Engine) rebuild1(ctx context.Context, req rebuildRequest) (<-chan struct{}, error) {
	select {
	case e.rebuild <- req:
		return req.done, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startRebuild begins a rebuild, or adds repos to the one running. A full
// rebuild (every repo the PDS lists) stores a rebuild marker; a crash
// before the marker is cleared makes the next start rebuild again.
func (a *applier) startRebuild(req rebuildRequest) {
	e := a.e
	rb := a.rb
	fresh := rb == nil
	if fresh {
		rb = &rebuildRun{reason: req.reason, started: time.Now(), lastLog: time.Now(), marker: checkpoint.None,
			desynced: map[string]bool{}, requested: map[string]bool{}}
		a.rb = rb
	}
	rb.waiters = append(rb.waiters, req.done)
	if req.stale && !rb.stale {
		rb.stale = true
		if e.cfg.OnStale != nil {
			e.cfg.OnStale(rb.started)
		}
	}
	switch {
	case req.dids != nil:
		rb.queue = append(rb.queue, req.dids...)
		for _, did := range req.dids {
			rb.requested[did] = true
		}
		rb.total += len(req.dids)
	case !rb.full:
		rb.full = true
		if req.resume {
			rb.marker = e.cfg.Progress.Stored().Rebuild
		} else {
			// The marker commits with the open batch (or later), never
			// before the decisions already taken; a first run's cursor is
			// stored from that write on (checkpoint.Progress).
			rb.marker = max(e.tracker.Highest(), 0)
			a.markRebuild(true, rb.marker)
		}
		rb.listing = true
		a.list()
	}
	if fresh {
		e.cfg.Metrics.rebuildStarted()
		e.log.Warn("rebuild started: resyncing repos from snapshots while the stream goes on", "reason", req.reason,
			"repos", rb.total, "full", rb.full)
	}
	a.pumpRebuild()
}

// markRebuild places (or clears) the rebuild marker at seq with the open
// batch, and returns that batch. A batch carries at most one change of
// each kind, so a second one goes into a fresh batch.
func (a *applier) markRebuild(place bool, seq int64) *batch {
	m := &a.pending.markers
	if (place && m.Place != checkpoint.None) || (!place && m.Clear != checkpoint.None) {
		a.closePending()
		m = &a.pending.markers
	}
	if place {
		m.Place = seq
	} else {
		m.Clear = seq
	}
	return a.pending
}

// list pages through listRepos in the background, after noting which repos
// of this source the view holds now.
func (a *applier) list() {
	e, ctx := a.e, a.ctx
	known := map[string]bool{}
	e.mu.Lock()
	for did, d := range e.states {
		if d.known && e.mayRemove(d) && d.status != statusDeleted {
			known[did] = true
		}
	}
	e.mu.Unlock()
	a.rb.known = known
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		var res listResult
		bo := backoff.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second}
		for {
			var repos []firehose.RepoInfo
			err := e.cfg.Fetcher.ListAllRepos(ctx, func(r firehose.RepoInfo) error {
				repos = append(repos, r)
				return nil
			})
			if err == nil {
				res.repos = repos
				break
			}
			if ctx.Err() != nil {
				return
			}
			e.log.Warn("listRepos failed; retrying", "err", err)
			if bo.Wait(ctx) != nil {
				return
			}
		}
		select {
		case e.listed <- res:
		case <-ctx.Done():
		}
	}()
}

// listed queues every listed repo, and every repo the view knows that the
// PDS no longer lists (to be removed).
func (a *applier) listed(r listResult) {
	e, rb := a.e, a.rb
	if rb == nil {
		return
	}
	rb.listing = false
	if r.err != nil {
		e.log.Error("rebuild can't list repos", "err", r.err)
		a.pumpRebuild()
		return
	}
	listed := map[string]bool{}
	for _, info := range r.repos {
		if !listed[info.DID] {
			listed[info.DID] = true
			rb.queue = append(rb.queue, info.DID)
			delete(rb.requested, info.DID) // the PDS says it hosts it
		}
	}
	// A repo the view held before the listing began and that the PDS does
	// not list is resynced like the others: only getRepo's answer (not
	// found, not active) removes or withdraws it, never its absence from
	// the list.
	var gone []string
	for did := range rb.known {
		if !listed[did] {
			gone = append(gone, did)
		}
	}
	sort.Strings(gone)
	rb.queue = append(rb.queue, gone...)
	rb.total += len(listed) + len(gone)
	e.log.Info("rebuild: repos listed", "listed", len(listed), "gone", len(gone))
	a.pumpRebuild()
}

// pumpRebuild keeps a bounded number of the rebuild's resyncs in flight,
// and finishes the rebuild when none is left.
func (a *applier) pumpRebuild() {
	e, rb := a.e, a.rb
	if rb == nil {
		return
	}
	for rb.inFlight < 2*e.cfg.ResyncConcurrency && len(rb.queue) > 0 {
		did := rb.queue[0]
		rb.queue = rb.queue[1:]
		d := e.state(did)
		if d.resync != nil {
			d.resync.again = true // a fresh snapshot after the one in flight
			delete(rb.requested, did)
			rb.done++
			continue
		}
		a.startJob(d, &resyncJob{reason: TriggerRebuild, rebuild: true, requested: rb.requested[did]})
		delete(rb.requested, did)
		rb.inFlight++
	}
	e.cfg.Metrics.rebuildProgress(rb.done, rb.total)
	e.status.rebuildProgress(rb.done, rb.total, rb.records)
	if time.Since(rb.lastLog) > 2*time.Second {
		rb.lastLog = time.Now()
		a.logProgress("rebuild progress")
	}
	if rb.listing || rb.inFlight > 0 || len(rb.queue) > 0 {
		return
	}
	b := a.pending
	if rb.marker != checkpoint.None {
		// The desync markers of repos that failed carry their retries
		// across restarts: the rebuild marker can go.
		b = a.markRebuild(false, rb.marker)
	}
	if len(rb.desynced) > 0 {
		a.incomplete = append(a.incomplete, &incompleteRebuild{dids: rb.desynced, waiters: rb.waiters, stale: rb.stale})
		a.e.log.Error("rebuild incomplete: some repos could not be read; they are retried until they are",
			"desynchronized", len(rb.desynced))
	} else {
		a.finished = append(a.finished, finishedRebuild{batch: b.id, waiters: rb.waiters, stale: rb.stale})
	}
	a.logProgress("rebuild done")
	e.cfg.Metrics.rebuildFinished()
	a.rb = nil
	a.publishDesync()
}

func (a *applier) logProgress(msg string) {
	rb := a.rb
	secs := time.Since(rb.started).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(rb.records) / secs
	}
	a.e.log.Info(msg, "repos_done", rb.done, "repos_total", rb.total, "records", rb.records,
		"records_per_second", fmt.Sprintf("%.0f", rate), "elapsed", time.Since(rb.started).Round(time.Millisecond))
}

// rebuildResyncDone counts a finished resync of the rebuild. A repo over
// the size limit stays desynchronized (counted, listed, retried) but does
// not hold the rebuild, nor readiness: it is one user's lasting condition,
// not the view's, and only an operator raising the limit ends it.
func (a *applier) rebuildResyncDone(d *didState, records int, tooLarge bool) {
	rb := a.rb
	if rb == nil {
		return
	}
	if d.desync && !tooLarge {
		rb.desynced[d.did] = true
	} else {
		delete(rb.desynced, d.did)
	}
	a.publishDesync()
	rb.inFlight--
	rb.done++
	rb.records += records
	a.e.cfg.Metrics.rebuildRecords(records)
	a.pumpRebuild()
}

// notifyFinished closes the waiters of rebuilds whose last batch committed.
func (a *applier) notifyFinished() {
	committed := a.e.committed.Load()
	kept := a.finished[:0]
	for _, f := range a.finished {
		if f.batch <= committed {
			for _, w := range f.waiters {
				close(w)
			}
			if f.stale && a.e.cfg.OnStale != nil {
				a.e.cfg.OnStale(time.Time{})
			}
			if a.e.cfg.OnRebuilt != nil {
				a.e.cfg.OnRebuilt()
			}
			continue
		}
		kept = append(kept, f)
	}
	a.finished = kept
}
