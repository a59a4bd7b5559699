package projector

import (
	"context"
	"sync"
)

// appliedIndex knows, per repo, the newest rev whose effects are committed,
// and the ZedToken to read them with (DESIGN §7).
type appliedIndex struct {
	mu      sync.Mutex
	revs    map[string]string
	token   string
	changed chan struct{}
}

func newAppliedIndex() *appliedIndex {
	return &appliedIndex{revs: map[string]string{}, changed: make(chan struct{})}
}

func (x *appliedIndex) set(did, rev, token string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if rev > x.revs[did] {
		x.revs[did] = rev
	}
	if token != "" {
		x.token = token
	}
}

func (x *appliedIndex) commit(revs map[string]string, token string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for did, rev := range revs {
		if rev > x.revs[did] {
			x.revs[did] = rev
		}
	}
	if token != "" {
		x.token = token
	}
	close(x.changed)
	x.changed = make(chan struct{})
}

// WaitApplied blocks until rev of did is applied (revs are TIDs and sort
// as strings) and returns the ZedToken to read with; it returns ctx's error
// on timeout.
func (e *Engine) WaitApplied(ctx context.Context, did, rev string) (string, error) {
	x := e.applied
	for {
		x.mu.Lock()
		have, tok, ch := x.revs[did], x.token, x.changed
		x.mu.Unlock()
		if have != "" && rev <= have {
			if tok == "" {
				tok = e.Token()
			}
			return tok, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-ch:
		}
	}
}

// AppliedRev is the newest applied rev of did ("" when unknown).
func (e *Engine) AppliedRev(did string) string {
	e.applied.mu.Lock()
	defer e.applied.mu.Unlock()
	return e.applied.revs[did]
}
