package httpapi

import (
	"time"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/redact"
)

// Status is the JSON of /v1/status and `consumer status --json`.
type Status struct {
	Name      string `json:"name"`
	Holder    string `json:"holder"`
	State     string `json:"state"`
	Ready     bool   `json:"ready"`
	Fenced    bool   `json:"fenced"`
	Connected bool   `json:"connected"`
	Cursor    int64  `json:"cursor"`
	Watermark int64  `json:"watermark"`
	// HeadSeq is the highest seq the PDS has sent (as last seen: kept
	// while disconnected); LagEvents is HeadSeq minus Watermark, and
	// LagSeconds the wall-clock lag (0 when caught up, growing while behind
	// or disconnected): the spaces_authz_lag_* gauges.
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
	// Desynchronized counts repos whose last resync failed (retried with
	// backoff); DesyncDIDs lists some of them (at most 100), and
	// RebuildIncomplete those a rebuild still waits for.
	Desynchronized    int      `json:"desynchronized_repos"`
	DesyncDIDs        []string `json:"desynchronized,omitempty"`
	RebuildIncomplete int      `json:"rebuild_incomplete_repos,omitempty"`
	// LastError has the credentials of any URL it quotes redacted.
	LastError     string  `json:"last_error,omitempty"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Sources are the PDSes of a daemon that follows several, each on its
	// own (the fields above sum them up).
	Sources []Status `json:"sources,omitempty"`
}

// StatusOf turns a snapshot into the status document.
func StatusOf(s pipeline.Snapshot) Status {
	st := Status{Name: s.Name, Holder: s.Holder, State: s.State.String(), Ready: s.Ready(), Fenced: s.Fenced,
		Connected: s.Connected, Cursor: s.Cursor, Watermark: s.Watermark, HeadSeq: s.Head, InFlight: s.InFlight,
		EventsWritten: s.Engine.EventsWritten, Batches: s.Engine.Batches, CachedRepos: s.Engine.CachedRepos,
		RefusedTuples: s.Engine.Poisoned, PipelineRestarts: s.Restarts, LastError: redact.String(s.LastError),
		Desynchronized: s.Engine.Desynchronized, DesyncDIDs: s.Engine.DesyncDIDs,
		RebuildIncomplete: s.Engine.RebuildIncomplete,
		UptimeSeconds:     time.Since(s.Started).Seconds()}
	st.LagEvents, st.LagSeconds = s.LagEvents, s.LagSeconds
	if !s.Engine.AppliedEventTime.IsZero() {
		st.AppliedEventTime = s.Engine.AppliedEventTime.UTC().Format(time.RFC3339Nano)
	}
	for _, m := range s.Sources {
		st.Sources = append(st.Sources, StatusOf(m))
	}
	return st
}
