package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/view"
)

// Drift kinds.
const (
	DriftMissing        = "missing"         // a record produces it, SpiceDB lacks it
	DriftExtra          = "extra"           // SpiceDB holds it, no record produces it
	DriftMissingLineage = "missing lineage" // the lineage of a produced tuple is absent
	DriftStaleLineage   = "stale lineage"   // lineage names a record that doesn't produce it
)

// Drift is one difference between what a repo's records produce under the
// rules and what SpiceDB holds for that account.
type Drift struct {
	Kind         string
	Relationship string
}

// Report is the result of reconciling one repo.
type Report struct {
	DID     string
	Rev     string // the snapshot's rev
	Records int
	// Status is "active", "inactive" (getRepo refused: only data is
	// compared), "not found" (everything the view holds is extra) or
	// "owned by <source>" (another source's repo: not compared).
	Status string
	Drift  []Drift
	// Unreadable counts records the snapshot names but whose block it
	// lacks; what SpiceDB holds for them is not reported as drift.
	Unreadable int
}

// Reconciler compares repos with SpiceDB (DESIGN §5).
type Reconciler struct {
	Rules   *view.Rules
	Store   Store
	Fetcher Fetcher
	// Source is the source whose repos are reconciled (required): a repo
	// another source owns is reported as such and never compared or
	// repaired from this source's PDS.
	Source string
	// Settle is how long to wait before checking a drifting repo again: a
	// drift seen twice is reported, one seen once was a write in flight
	// (default 1s).
	Settle time.Duration
	// Logger and Metrics serve Run (optional).
	Logger  *slog.Logger
	Metrics *Metrics
}

// Run is the daemon's periodic reconcile (--reconcile-every): every period
// it checks every repo, one account at a time, and resyncs the ones that
// drift. It returns nil when ctx ends or resync fails (the engine stopped).
func (r *Reconciler) Run(ctx context.Context, every time.Duration, resync func(ctx context.Context, did string) error) error {
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
		dids, err := r.Repos(ctx)
		if err != nil {
			log.Warn("reconcile: listing repos failed", "err", err)
			continue
		}
		drifting := 0
		for _, did := range dids {
			rep, err := r.Check(ctx, did)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				log.Warn("reconcile: check failed", "did", did, "err", err)
				continue
			}
			r.Metrics.Reconciled(rep.Drift)
			if len(rep.Drift) == 0 {
				continue
			}
			drifting++
			log.Warn("reconcile: repo drifted from its records; resyncing it", "did", did, "drift", len(rep.Drift),
				"first", rep.Drift[0].Kind+" "+rep.Drift[0].Relationship)
			if err := resync(ctx, did); err != nil {
				return nil
			}
		}
		log.Info("reconcile pass done", "repos", len(dids), "drifting", drifting)
	}
}

// Check reconciles one repo, checking twice when drift shows up so that a
// change the consumer is applying right now is not reported.
func (r *Reconciler) Check(ctx context.Context, did string) (Report, error) {
	first, err := r.check(ctx, did)
	if err != nil || len(first.Drift) == 0 {
		return first, err
	}
	settle := r.Settle
	if settle <= 0 {
		settle = time.Second
	}
	select {
	case <-ctx.Done():
		return first, ctx.Err()
	case <-time.After(settle):
	}
	second, err := r.check(ctx, did)
	if err != nil {
		return second, err
	}
	seen := map[Drift]bool{}
	for _, d := range first.Drift {
		seen[d] = true
	}
	kept := second.Drift[:0]
	for _, d := range second.Drift {
		if seen[d] {
			kept = append(kept, d)
		}
	}
	second.Drift = kept
	return second, nil
}

func (r *Reconciler) check(ctx context.Context, did string) (Report, error) {
	rep := Report{DID: did, Status: "active"}
	if r.Source == "" {
		return rep, errors.New("projector: reconcile: Source is required")
	}
	stored, err := r.Store.LoadRepo(ctx, did, "")
	if err != nil {
		return rep, fmt.Errorf("projector: reconcile %s: %w", did, err)
	}
	if stored.Source != "" && stored.Source != r.Source {
		rep.Status = "owned by " + stored.Source
		return rep, nil
	}
	snap, err := r.Fetcher.GetRepo(ctx, did, r.Rules.Projects)
	switch {
	case errors.Is(err, firehose.ErrRepoNotFound):
		rep.Status = "not found"
	case errors.Is(err, firehose.ErrRepoInactive):
		rep.Status = "inactive"
	case err != nil:
		return rep, fmt.Errorf("projector: reconcile %s: %w", did, err)
	}
	wantData := map[string]bool{}
	wantLin := map[string]bool{}
	unknown := map[string]bool{} // paths of records whose block the snapshot lacks
	if snap != nil {
		rep.Rev, rep.Records = snap.Rev, len(snap.Records)
		for _, rec := range snap.Records {
			if unreadable(rec.Err) {
				unknown[rec.Path()] = true
				rep.Unreadable++
				continue
			}
			if rec.Err != nil {
				continue
			}
			tuples, err := r.Rules.Project(did, rec.Collection, rec.RKey, rec.Value)
			if err != nil {
				continue
			}
			rid := view.RecordID(did, rec.Collection, rec.RKey)
			for _, t := range tuples {
				wantData[t.String()] = true
				wantLin[view.LineageTuple(t, rid).String()] = true
			}
		}
	}
	data, err := r.Store.LoadData(ctx, did, "")
	if err != nil {
		return rep, fmt.Errorf("projector: reconcile %s: %w", did, err)
	}
	entries, err := r.Store.LoadLineage(ctx, did, "")
	if err != nil {
		return rep, fmt.Errorf("projector: reconcile %s: %w", did, err)
	}
	gotData := map[string]bool{}
	for _, t := range data {
		gotData[t.String()] = true
	}
	gotLin := map[string]bool{}
	for _, en := range entries {
		coll, rkey := splitPath(en.Path)
		lin := view.LineageTuple(en.Tuple, view.RecordID(did, coll, rkey)).String()
		gotLin[lin] = true
		if unknown[en.Path] { // unreadable now: what it produced is not drift
			wantLin[lin] = true
			if gotData[en.Tuple.String()] {
				wantData[en.Tuple.String()] = true
			}
		}
	}
	add := func(kind string, set map[string]bool, not map[string]bool) {
		for s := range set {
			if !not[s] {
				rep.Drift = append(rep.Drift, Drift{Kind: kind, Relationship: s})
			}
		}
	}
	add(DriftMissing, wantData, gotData)
	add(DriftExtra, gotData, wantData)
	if rep.Status != "inactive" { // an inactive repo's records can't be read
		add(DriftMissingLineage, wantLin, gotLin)
		add(DriftStaleLineage, gotLin, wantLin)
	}
	sort.Slice(rep.Drift, func(i, j int) bool {
		if rep.Drift[i].Kind != rep.Drift[j].Kind {
			return rep.Drift[i].Kind < rep.Drift[j].Kind
		}
		return rep.Drift[i].Relationship < rep.Drift[j].Relationship
	})
	return rep, nil
}

// Repos lists the repos to reconcile: every repo the PDS lists and every
// repo the view knows.
func (r *Reconciler) Repos(ctx context.Context) ([]string, error) {
	set := map[string]bool{}
	if err := r.Fetcher.ListAllRepos(ctx, func(info firehose.RepoInfo) error {
		set[info.DID] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("projector: list repos: %w", err)
	}
	known, err := r.Store.LoadRepos(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, k := range known {
		if k.Status != statusDeleted && (k.Source == "" || k.Source == r.Source) {
			set[k.DID] = true
		}
	}
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out, nil
}
