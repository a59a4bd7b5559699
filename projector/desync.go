package projector

import (
	"sort"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/backoff"
	"github.com/spaces-authz/spaces-authz/view"
)

// Retry delays of a desynchronized repo: capped, jittered, for as long as
// it takes.
const (
	retryMin = time.Second
	retryMax = 5 * time.Minute
)

// retry is a repo waiting for its next resync (applier.retries) or claim
// (applier.claimRetries).
type retry struct {
	due time.Time
	bo  backoff.Backoff
	// soft: the repo's last snapshot lacked some record blocks. It is
	// read again with the same backoff, but it is not desynchronized:
	// what it produced is kept, it is not counted, and no rebuild waits.
	soft bool
	// activation: a claim retry stands for this stream's activation of
	// the account; once seen, it stays.
	activation bool
}

// schedule returns did's retry in m (a new one on first use), due after
// its next backoff: further away each time.
func schedule(m map[string]*retry, did string) *retry {
	r := m[did]
	if r == nil {
		r = &retry{bo: backoff.Backoff{Min: retryMin, Max: retryMax}}
		m[did] = r
	}
	r.due = time.Now().Add(r.bo.Next())
	return r
}

// markDesync records that d's resync failed: what the view holds for it
// may be wrong. The marker is stored with the decision's bookkeeping (a
// restart retries it too), and a retry is scheduled.
func (a *applier) markDesync(d *didState, seq int64) unit {
	a.desynced(d)
	if d.desync {
		return nil
	}
	d.desync, d.desyncSeq = true, seq
	a.e.markKnown(d)
	return unit{{Op: view.OpTouch, Tuple: view.DesyncTuple(d.did, seq)}}
}

// clearDesync removes d's desync marker (a resync of it succeeded).
func (a *applier) clearDesync(d *didState) unit {
	u := unit{{Op: view.OpDelete, Tuple: view.DesyncTuple(d.did, d.desyncSeq)}}
	d.desync, d.desyncSeq = false, 0
	return u
}

// desynced schedules d's next retry, further away each time.
func (a *applier) desynced(d *didState) {
	schedule(a.retries, d.did).soft = false
	a.publishDesync()
}

// incompleteSnapshot schedules (incomplete) or drops (complete) a soft
// retry of d after a successful resync at seq whose snapshot lacked, or no
// longer lacks, record blocks, and returns the update of d's stored
// incomplete marker (so that a restart goes on reading the repo).
func (a *applier) incompleteSnapshot(d *didState, incomplete bool, seq int64) []view.Update {
	if !incomplete {
		return a.completeSnapshot(d)
	}
	a.readAgain(d)
	if d.incomplete {
		return nil
	}
	d.incomplete, d.incompleteSeq = true, seq
	a.e.markKnown(d) // its bookkeeping is stored now
	return []view.Update{{Op: view.OpTouch, Tuple: view.IncompleteTuple(d.did, seq)}}
}

// completeSnapshot drops d's soft retry and its stored incomplete marker:
// its last read was whole, or the repo is gone or withdrawn.
func (a *applier) completeSnapshot(d *didState) []view.Update {
	if r := a.retries[d.did]; r != nil && r.soft {
		delete(a.retries, d.did)
	}
	if !d.incomplete {
		return nil
	}
	u := []view.Update{{Op: view.OpDelete, Tuple: view.IncompleteTuple(d.did, d.incompleteSeq)}}
	d.incomplete, d.incompleteSeq = false, 0
	return u
}

// readAgain schedules a soft retry of d, further away each time.
func (a *applier) readAgain(d *didState) {
	// Soft, or a desynchronized repo whose resync just worked (its
	// desync marker goes with this write): read it again later either way.
	schedule(a.retries, d.did).soft = true
}

// desyncCleared notes that d's desync ends with batch b: once b commits,
// rebuilds that waited for it may be done.
func (a *applier) desyncCleared(did string, b *batch) {
	if r := a.retries[did]; r != nil && !r.soft {
		delete(a.retries, did)
	}
	if a.rb != nil {
		delete(a.rb.desynced, did)
	}
	kept := a.incomplete[:0]
	for _, ir := range a.incomplete {
		delete(ir.dids, did)
		if len(ir.dids) == 0 {
			a.finished = append(a.finished, finishedRebuild{batch: b.id, waiters: ir.waiters, stale: ir.stale})
			continue
		}
		kept = append(kept, ir)
	}
	a.incomplete = kept
	a.publishDesync()
}

// retryDue starts the resyncs of desynchronized repos whose time has come.
func (a *applier) retryDue(now time.Time) {
	for did, r := range a.retries {
		if now.Before(r.due) {
			continue
		}
		d := a.e.state(did)
		if d.resync != nil || a.e.isForeign(d) {
			continue
		}
		r.due = now.Add(retryMax) // pushed back by the next failure, or cleared
		a.startResync(d, nil, TriggerRetry)
	}
	for did, r := range a.claimRetries {
		if now.Before(r.due) {
			continue
		}
		d := a.e.state(did)
		if !a.e.isForeign(d) {
			delete(a.claimRetries, did) // ours now (or nobody's): no claim needed
			continue
		}
		if d.resync != nil {
			continue
		}
		r.due = now.Add(retryMax) // pushed back by the next refusal, or cleared
		a.startJob(d, &resyncJob{reason: TriggerClaim, claim: true})
	}
}

// retryClaim schedules d's claim again, further away each time; an
// activation, once seen, stays one.
func (a *applier) retryClaim(d *didState, activation bool) {
	r := schedule(a.claimRetries, d.did)
	r.activation = r.activation || activation
}

// incompleteRebuild is a rebuild whose every resync ran but some failed:
// its waiters are told only when those repos are resynced.
type incompleteRebuild struct {
	dids    map[string]bool
	waiters []chan struct{}
	stale   bool
}

// publishDesync refreshes what status and metrics show of desynchronized
// repos.
func (a *applier) publishDesync() {
	dids := make([]string, 0, min(len(a.retries), maxListedDesync))
	hard := 0
	for did, r := range a.retries {
		if !r.soft {
			dids = append(dids, did)
			hard++
		}
	}
	sort.Strings(dids)
	if len(dids) > maxListedDesync {
		dids = dids[:maxListedDesync]
	}
	blocking := 0
	for _, ir := range a.incomplete {
		blocking += len(ir.dids)
	}
	if a.rb != nil {
		blocking += len(a.rb.desynced)
	}
	a.e.status.desync(hard, dids, blocking)
	a.e.cfg.Metrics.setDesync(hard)
}

// maxListedDesync bounds the desynchronized repos /v1/status lists.
const maxListedDesync = 100
