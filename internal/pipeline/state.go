package pipeline

import (
	"fmt"
	"time"

	"github.com/spaces-authz/spaces-authz/projector"
)

// State is where a consumer is in its life.
type State int

// The states of a consumer. Only the running ones can be ready.
const (
	StateStarting State = iota
	StateWaitingForLease
	StateRunning
	// StateRebuilding: running, with a rebuild in progress.
	StateRebuilding
	// StateResetRebuild: SpiceDB was reset under the consumer; it waits
	// for the schema and the lease to rebuild the view.
	StateResetRebuild
	StateStopped
	StateFailed
	// StateRetrying: a run ended on an unavailable SpiceDB (or datastore);
	// the consumer waits for it to start again from the stored cursor.
	StateRetrying
)

func (s State) String() string {
	switch s {
	case StateStarting:
		return "starting"
	case StateWaitingForLease:
		return "waiting for lease"
	case StateRunning:
		return "running"
	case StateRebuilding:
		return "running (rebuilding)"
	case StateResetRebuild:
		return "rebuilding after a SpiceDB reset"
	case StateStopped:
		return "stopped"
	case StateFailed:
		return "failed"
	case StateRetrying:
		return "waiting for SpiceDB"
	}
	return "unknown"
}

// Running reports a state in which the consumer follows the stream.
func (s State) Running() bool { return s == StateRunning || s == StateRebuilding }

// Snapshot is the consumer's state for status and health endpoints.
type Snapshot struct {
	State     State
	LastError string
	Fenced    bool
	Connected bool
	Watermark int64
	Highest   int64
	InFlight  int
	Cursor    int64
	Engine    projector.Status
	Holder    string
	Name      string
	Restarts  int
	// Rebuilt counts the rebuilds committed.
	Rebuilt int
	Started time.Time
	// Head is the highest seq the PDS has sent (checkpoint.None before
	// any), kept across connections and runs; LagEvents is Head minus the
	// watermark. LagSeconds is how stale the view is by the wall clock: 0
	// when caught up, growing while behind or disconnected
	// (firehose.Source).
	Head       int64
	LagEvents  int64
	LagSeconds float64
	// Sources are the snapshots of each source of a daemon that follows
	// several PDSes (Group); empty for one stream.
	Sources []Snapshot
}

// Ready reports connected to the PDS, running (holding the lease), not
// fenced or failed.
func (s Snapshot) Ready() bool { return s.NotReadyReason() == "" }

// NotReadyReason says why the consumer is not ready ("" when it is).
func (s Snapshot) NotReadyReason() string {
	for _, m := range s.Sources {
		if why := m.NotReadyReason(); why != "" {
			return "source " + m.Name + ": " + why
		}
	}
	switch {
	case s.Fenced:
		return "fenced: another consumer holds the lease"
	case !s.State.Running():
		return s.State.String()
	case !s.Connected:
		return "not connected to the PDS stream"
	case s.Engine.RebuildIncomplete > 0:
		return fmt.Sprintf("rebuild incomplete: %d repos could not be read (retried with backoff)", s.Engine.RebuildIncomplete)
	}
	return ""
}
