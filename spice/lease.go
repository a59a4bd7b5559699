package spice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/view"
)

// DefaultLeaseTimeout is how old a heartbeat must be before the lease is
// considered abandoned.
const DefaultLeaseTimeout = 15 * time.Second

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_\-]{1,128}$`)

// ValidName reports whether name can be a projector or consumer ID.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// ProjectorState is what SpiceDB holds on one projector object: the lease,
// and the progress of the source named after the projector.
type ProjectorState struct {
	// Holder is the consumer ID holding the lease ("" when none).
	Holder string
	// HeartbeatMs is the holder's last heartbeat, unix milliseconds (0 when none).
	HeartbeatMs int64
	// Progress is the cursor and markers (see package checkpoint).
	Progress checkpoint.State
	// Epoch is the source's ownership epoch (checkpoint.None when none is
	// stored; AcquireLease stores 0). Every write carries it as a
	// precondition; another source that takes a repo over moves it.
	Epoch int64
}

// Empty reports a projector with no lease and no cursor: a first run, or a
// SpiceDB that was reset.
func (s ProjectorState) Empty() bool { return s.Holder == "" && s.Progress.Cursor == checkpoint.None }

// ReadProjector reads a projector's lease, cursor and markers, fully
// consistent.
func (c *Client) ReadProjector(ctx context.Context, name string) (ProjectorState, error) {
	st := ProjectorState{Progress: checkpoint.Empty(), Epoch: checkpoint.None}
	filter := &v1.RelationshipFilter{ResourceType: view.TypeProjector, OptionalResourceId: name}
	err := c.Read(ctx, filter, "", func(t view.Tuple) error {
		if ok, err := st.Progress.Decode(t); ok || err != nil {
			return err
		}
		switch t.Relation {
		case view.RelHolder:
			if st.Holder != "" {
				return fmt.Errorf("spice: projector %s has two holders (%s, %s)", name, st.Holder, t.SubjectID)
			}
			st.Holder = t.SubjectID
		case view.RelHeartbeat, view.RelEpoch:
			n, err := strconv.ParseInt(t.SubjectID, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("spice: projector %s: bad %s %q", name, t.Relation, t.SubjectID)
			}
			if t.Relation == view.RelEpoch {
				st.Epoch = max(st.Epoch, n)
			} else {
				st.HeartbeatMs = max(st.HeartbeatMs, n)
			}
		}
		return nil
	})
	if err != nil {
		return ProjectorState{}, fmt.Errorf("spice: read projector %s: %w", name, err)
	}
	return st, nil
}

// Sources lists the projectors (sources) that store a cursor in SpiceDB.
func (c *Client) Sources(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	filter := &v1.RelationshipFilter{ResourceType: view.TypeProjector, OptionalRelation: view.RelCursor}
	err := c.Read(ctx, filter, "", func(t view.Tuple) error {
		if !seen[t.ResourceID] {
			seen[t.ResourceID] = true
			out = append(out, t.ResourceID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spice: list sources: %w", err)
	}
	return out, nil
}

// Projectors lists, sorted, the projectors SpiceDB holds any state of (a
// lease, a cursor, a marker, an epoch): the names a tool may be pointed at.
func (c *Client) Projectors(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	err := c.Read(ctx, &v1.RelationshipFilter{ResourceType: view.TypeProjector}, "", func(t view.Tuple) error {
		seen[t.ResourceID] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spice: list projectors: %w", err)
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// LeaseConfig configures AcquireLease.
type LeaseConfig struct {
	Client *Client
	// Name of the projector (required), Holder this consumer's ID (required).
	Name, Holder string
	// Timeout after which a silent holder's lease may be taken (default 15s).
	Timeout time.Duration
	// Takeover takes the lease even from a live holder (--takeover).
	Takeover bool
	// Wait for a held lease to go stale instead of returning ErrLeaseHeld.
	Wait bool
	// Logger and Metrics are optional.
	Logger  *slog.Logger
	Metrics *Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// AcquireLease takes the projector's lease (DESIGN §4): when nobody holds
// it, when the holder's heartbeat is older than Timeout (by the wall clock,
// or unchanged for Timeout while we watch), or with Takeover. It writes
// with a precondition on what it read, so two consumers racing can't both
// win. It returns the state as of the acquisition.
func AcquireLease(ctx context.Context, cfg LeaseConfig) (ProjectorState, error) {
	if !ValidName(cfg.Name) || !ValidName(cfg.Holder) || cfg.Holder == dryRunHolder {
		return ProjectorState{}, fmt.Errorf("spice: lease: invalid projector name %q or holder %q", cfg.Name, cfg.Holder)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultLeaseTimeout
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var seenHB int64 = -1
	var seenAt time.Time
	lost := 0 // precondition failures in a row
	for {
		st, err := cfg.Client.ReadProjector(ctx, cfg.Name)
		if err != nil {
			return ProjectorState{}, err
		}
		t := now()
		if st.HeartbeatMs != seenHB {
			seenHB, seenAt = st.HeartbeatMs, time.Now()
		}
		age := t.Sub(time.UnixMilli(st.HeartbeatMs))
		stale := age > cfg.Timeout || time.Since(seenAt) > cfg.Timeout
		hb := t.UnixMilli()
		updates := []view.Update{{Op: view.OpTouch, Tuple: view.HolderTuple(cfg.Name, cfg.Holder)}}
		if st.HeartbeatMs != 0 && st.HeartbeatMs != hb {
			updates = append(updates, view.Update{Op: view.OpDelete, Tuple: view.HeartbeatTuple(cfg.Name, st.HeartbeatMs)})
		}
		updates = append(updates, view.Update{Op: view.OpTouch, Tuple: view.HeartbeatTuple(cfg.Name, hb)})
		if st.Epoch == checkpoint.None {
			// The first lease of this source (or one stored by a version
			// without epochs): its writes will carry epoch 0.
			updates = append(updates, view.Update{Op: view.OpTouch, Tuple: view.EpochTuple(cfg.Name, 0)})
		}
		var pre *v1.Precondition
		switch {
		case st.Holder == cfg.Holder && st.Epoch != checkpoint.None:
			cfg.Metrics.SetLeaseState(LeaseHeld)
			return st, nil
		case st.Holder == cfg.Holder:
			pre = mustMatch(view.HolderTuple(cfg.Name, cfg.Holder))
		case st.Holder == "":
			pre = &v1.Precondition{Operation: v1.Precondition_OPERATION_MUST_NOT_MATCH,
				Filter: &v1.RelationshipFilter{ResourceType: view.TypeProjector, OptionalResourceId: cfg.Name,
					OptionalRelation: view.RelHolder}}
		case cfg.Takeover || stale:
			log.Warn("taking over the lease", "projector", cfg.Name, "previous_holder", st.Holder,
				"heartbeat_age", age.Round(time.Millisecond), "forced", cfg.Takeover)
			updates = append(updates, view.Update{Op: view.OpDelete, Tuple: view.HolderTuple(cfg.Name, st.Holder)})
			pre = mustMatch(view.HolderTuple(cfg.Name, st.Holder))
		default:
			cfg.Metrics.SetLeaseState(LeaseWaiting)
			if !cfg.Wait {
				return st, fmt.Errorf("%w: %s (heartbeat %s ago)", ErrLeaseHeld, st.Holder, age.Round(time.Second))
			}
			log.Info("lease is held by another consumer; waiting", "projector", cfg.Name, "holder", st.Holder,
				"heartbeat_age", age.Round(time.Millisecond), "timeout", cfg.Timeout)
			select {
			case <-ctx.Done():
				return ProjectorState{}, ctx.Err()
			case <-time.After(min(cfg.Timeout/3, 5*time.Second)):
			}
			continue
		}
		// The progress read must still be what is stored: a holder being
		// taken over writes cursors until it is fenced, and one it wrote
		// after our read would stay next to ours (two cursors).
		_, err = cfg.Client.write(ctx, updates, append(progressPreconditions(cfg.Name, st.Progress), pre))
		switch {
		case err == nil:
			st.Holder, st.HeartbeatMs = cfg.Holder, hb
			st.Epoch = max(st.Epoch, 0)
			cfg.Metrics.SetLeaseState(LeaseHeld)
			log.Info("lease acquired", "projector", cfg.Name, "holder", cfg.Holder, "cursor", st.Progress.Cursor)
			return st, nil
		case Classify(err) == ClassPrecondition:
			// Someone else moved first; look again. Endless failures mean
			// a writer that never stops, or state we misread.
			if lost++; lost >= maxLeaseRaces {
				return ProjectorState{}, fmt.Errorf("spice: acquire lease: what is stored changed under %d attempts in a row; "+
					"is another consumer still writing as %s?", lost, st.Holder)
			}
			continue
		case Classify(err) == ClassTransient:
			select {
			case <-ctx.Done():
				return ProjectorState{}, ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		case Classify(err) == ClassSchema:
			return ProjectorState{}, fmt.Errorf("%w: %w", ErrSchema, err)
		default:
			return ProjectorState{}, fmt.Errorf("spice: acquire lease: %w", err)
		}
	}
}

// progressPreconditions hold while the stored cursor and markers of
// projector name are exactly p.
func progressPreconditions(name string, p checkpoint.State) []*v1.Precondition {
	pre := make([]*v1.Precondition, 0, 3)
	for _, m := range []struct {
		rel string
		seq int64
		t   view.Tuple
	}{
		{view.RelCursor, p.Cursor, view.CursorTuple(name, p.Cursor)},
		{view.RelRewind, p.Rewind, view.MarkerTuple(name, view.RelRewind, p.Rewind)},
		{view.RelRebuild, p.Rebuild, view.MarkerTuple(name, view.RelRebuild, p.Rebuild)},
	} {
		if m.seq != checkpoint.None {
			pre = append(pre, mustMatch(m.t))
			continue
		}
		pre = append(pre, &v1.Precondition{Operation: v1.Precondition_OPERATION_MUST_NOT_MATCH,
			Filter: &v1.RelationshipFilter{ResourceType: view.TypeProjector, OptionalResourceId: name,
				OptionalRelation: m.rel}})
	}
	return pre
}

// maxLeaseRaces bounds the lease writes in a row that fail their
// preconditions: a holder being taken over stops within one write.
const maxLeaseRaces = 50

func mustMatch(t view.Tuple) *v1.Precondition {
	return &v1.Precondition{Operation: v1.Precondition_OPERATION_MUST_MATCH, Filter: exactFilter(t)}
}

func exactFilter(t view.Tuple) *v1.RelationshipFilter {
	return &v1.RelationshipFilter{ResourceType: t.ResourceType, OptionalResourceId: t.ResourceID,
		OptionalRelation: t.Relation, OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: t.SubjectType,
			OptionalSubjectId: t.SubjectID}}
}

// write is one WriteRelationships call.
func (c *Client) write(ctx context.Context, updates []view.Update, pre []*v1.Precondition) (string, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.api.WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: c.ns.updates(updates),
		OptionalPreconditions: c.ns.preconditions(pre)})
	if err != nil {
		return "", err
	}
	return resp.GetWrittenAt().GetToken(), nil
}

// ErrNotHolder is returned by Release when this consumer no longer holds
// the lease.
var ErrNotHolder = errors.New("spice: not the lease holder")
