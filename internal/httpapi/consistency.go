package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// DefaultConsistencyTimeout and MaxConsistencyTimeout bound /v1/consistency.
const (
	DefaultConsistencyTimeout = 2 * time.Second
	MaxConsistencyTimeout     = 30 * time.Second
)

// ConsistencyResponse is the JSON answer of /v1/consistency.
type ConsistencyResponse struct {
	DID string `json:"did"`
	Rev string `json:"rev"`
	// ZedToken: pass it as at_least_as_fresh to CheckPermission.
	ZedToken string `json:"zedtoken"`
	// AppliedRev is the newest rev of the repo applied.
	AppliedRev string `json:"applied_rev,omitempty"`
	Error      string `json:"error,omitempty"`
}

func (a *API) consistency(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	did, rev := q.Get("did"), q.Get("rev")
	if _, err := syntax.ParseDID(did); err != nil {
		writeJSON(w, http.StatusBadRequest, ConsistencyResponse{DID: did, Rev: rev, Error: "malformed did: " + err.Error()})
		return
	}
	if _, err := syntax.ParseTID(rev); err != nil {
		writeJSON(w, http.StatusBadRequest, ConsistencyResponse{DID: did, Rev: rev, Error: "malformed rev (want a TID): " + err.Error()})
		return
	}
	timeout := DefaultConsistencyTimeout
	if t := q.Get("timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 {
			writeJSON(w, http.StatusBadRequest, ConsistencyResponse{DID: did, Rev: rev, Error: "malformed timeout: " + t})
			return
		}
		timeout = min(d, MaxConsistencyTimeout)
	}
	// Each waiter holds a goroutine, a connection and a subscription in
	// the consumer: refuse rather than queue past the bound.
	select {
	case a.waiters <- struct{}{}:
		a.m.waiting(1)
		defer func() {
			<-a.waiters
			a.m.waiting(-1)
		}()
	default:
		a.m.refusedWaiter()
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusTooManyRequests, ConsistencyResponse{DID: did, Rev: rev,
			Error: fmt.Sprintf("too many /v1/consistency requests waiting (at most %d): retry later", cap(a.waiters))})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	tok, err := a.src.WaitApplied(ctx, did, rev)
	if err != nil {
		status := http.StatusGatewayTimeout
		if !errors.Is(err, context.DeadlineExceeded) {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, ConsistencyResponse{DID: did, Rev: rev, Error: "rev not applied within " + timeout.String()})
		return
	}
	writeJSON(w, http.StatusOK, ConsistencyResponse{DID: did, Rev: rev, ZedToken: tok})
}
