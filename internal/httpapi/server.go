// Package httpapi serves the consumer's HTTP endpoints: /metrics,
// /healthz (the process is alive), /readyz (connected to the PDS and
// SpiceDB, holding the lease, not failed), /v1/status (a JSON snapshot) and
// /v1/consistency (read-your-writes, DESIGN §7).
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
)

// DefaultConsistencyTimeout and MaxConsistencyTimeout bound /v1/consistency.
const (
	DefaultConsistencyTimeout = 2 * time.Second
	MaxConsistencyTimeout     = 30 * time.Second
)

// Source is what the endpoints read.
type Source interface {
	Snapshot() pipeline.Snapshot
	WaitApplied(ctx context.Context, did, rev string) (string, error)
	Resync(ctx context.Context, dids []string) error
}

// Server is the HTTP server.
type Server struct {
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

// Handler builds the endpoints' mux.
func Handler(src Source, reg prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		s := src.Snapshot()
		if why := s.NotReadyReason(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, StatusOf(src.Snapshot()))
	})
	mux.HandleFunc("GET /v1/consistency", func(w http.ResponseWriter, r *http.Request) {
		consistency(w, r, src)
	})
	// Admin: resync repos from snapshots (reconcile --fix uses it).
	mux.HandleFunc("POST /v1/admin/resync", func(w http.ResponseWriter, r *http.Request) {
		dids := r.URL.Query()["did"]
		for _, d := range dids {
			if _, err := syntax.ParseDID(d); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "malformed did: " + err.Error()})
				return
			}
		}
		if len(dids) == 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "give at least one did"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
		defer cancel()
		if err := src.Resync(ctx, dids); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"resynced": len(dids)})
	})
	return mux
}

// Status is the JSON of /v1/status and `consumer status --json`.
type Status struct {
	Name             string  `json:"name"`
	Holder           string  `json:"holder"`
	State            string  `json:"state"`
	Ready            bool    `json:"ready"`
	Fenced           bool    `json:"fenced"`
	Connected        bool    `json:"connected"`
	Cursor           int64   `json:"cursor"`
	Watermark        int64   `json:"watermark"`
	HeadSeq          int64   `json:"head_seq"`
	LagEvents        int64   `json:"lag_events"`
	LagSeconds       float64 `json:"lag_seconds"`
	InFlight         int     `json:"in_flight"`
	AppliedEventTime string  `json:"applied_event_time,omitempty"`
	EventsWritten    int64   `json:"events_written"`
	Batches          int64   `json:"batches"`
	CachedRepos      int     `json:"cached_repos"`
	RefusedTuples    int     `json:"refused_tuples"`
	PipelineRestarts int     `json:"pipeline_restarts"`
	LastError        string  `json:"last_error,omitempty"`
	UptimeSeconds    float64 `json:"uptime_seconds"`
}

// StatusOf turns a snapshot into the status document.
func StatusOf(s pipeline.Snapshot) Status {
	st := Status{Name: s.Name, Holder: s.Holder, State: s.State.String(), Ready: s.Ready(), Fenced: s.Fenced,
		Connected: s.Connected, Cursor: s.Cursor, Watermark: s.Watermark, HeadSeq: s.Highest, InFlight: s.InFlight,
		EventsWritten: s.Engine.EventsWritten, Batches: s.Engine.Batches, CachedRepos: s.Engine.CachedRepos,
		RefusedTuples: s.Engine.Poisoned, PipelineRestarts: s.Restarts, LastError: s.LastError,
		UptimeSeconds: time.Since(s.Started).Seconds()}
	if s.Highest > s.Watermark && s.Watermark >= 0 {
		st.LagEvents = s.Highest - s.Watermark
	}
	st.LagSeconds = s.LagSeconds
	if !s.Engine.AppliedEventTime.IsZero() {
		st.AppliedEventTime = s.Engine.AppliedEventTime.UTC().Format(time.RFC3339Nano)
	}
	return st
}

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

func consistency(w http.ResponseWriter, r *http.Request, src Source) {
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
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	tok, err := src.WaitApplied(ctx, did, rev)
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

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Listen binds addr (a loopback address by default in the command line).
func Listen(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("httpapi: listen %s: %w", addr, err)
	}
	return &Server{srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}, ln: ln, log: log}, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("httpapi: serve: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
		return nil
	}
}
