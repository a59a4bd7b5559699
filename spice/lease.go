package spice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/projector"
)

// NoSeq marks an absent cursor or marker.
const NoSeq int64 = -1

// DefaultLeaseTimeout is how old a heartbeat must be before the lease is
// considered abandoned.
const DefaultLeaseTimeout = 15 * time.Second

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_\-]{1,128}$`)

// ValidName reports whether name can be a projector or consumer ID.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// ProjectorState is what SpiceDB holds for one projector.
type ProjectorState struct {
	// Holder is the consumer ID holding the lease ("" when none).
	Holder string
	// HeartbeatMs is the holder's last heartbeat, unix milliseconds (0 when none).
	HeartbeatMs int64
	// Cursor: every seq at or below it is applied (NoSeq when none).
	Cursor int64
	// Rewind: after a rewind, each repo is resynced on its first event at
	// or below this seq (NoSeq when none).
	Rewind int64
	// Rebuild is set while a rebuild is in progress (NoSeq when none).
	Rebuild int64
}

// Empty reports a projector with no lease and no cursor: a first run, or a
// SpiceDB that was reset.
func (s ProjectorState) Empty() bool { return s.Holder == "" && s.Cursor == NoSeq }

func projectorTuple(name, rel, subType, subID string) projector.Tuple {
	return projector.Tuple{ResourceType: projector.TypeProjector, ResourceID: name, Relation: rel,
		SubjectType: subType, SubjectID: subID}
}

// HolderTuple is projector:<name>#holder@consumer:<holder>.
func HolderTuple(name, holder string) projector.Tuple {
	return projectorTuple(name, projector.RelHolder, projector.TypeConsumer, holder)
}

// CursorTuple is projector:<name>#cursor@cursor:<seq>.
func CursorTuple(name string, seq int64) projector.Tuple {
	return projectorTuple(name, projector.RelCursor, projector.TypeCursor, strconv.FormatInt(seq, 10))
}

// HeartbeatTuple is projector:<name>#heartbeat@heartbeat:<unix ms>.
func HeartbeatTuple(name string, ms int64) projector.Tuple {
	return projectorTuple(name, projector.RelHeartbeat, projector.TypeHeartbeat, strconv.FormatInt(ms, 10))
}

// MarkerTuple is projector:<name>#<rewind|rebuild>@seq:<seq>.
func MarkerTuple(name, rel string, seq int64) projector.Tuple {
	return projectorTuple(name, rel, projector.TypeSeq, strconv.FormatInt(seq, 10))
}

// ReadProjector reads a projector's lease, cursor and markers, fully
// consistent.
func (c *Client) ReadProjector(ctx context.Context, name string) (ProjectorState, error) {
	st := ProjectorState{Cursor: NoSeq, Rewind: NoSeq, Rebuild: NoSeq}
	filter := &v1.RelationshipFilter{ResourceType: projector.TypeProjector, OptionalResourceId: name}
	err := c.Read(ctx, filter, "", func(t projector.Tuple) error {
		var n int64
		if t.Relation != projector.RelHolder {
			v, err := strconv.ParseInt(t.SubjectID, 10, 64)
			if err != nil {
				return fmt.Errorf("spice: projector %s: bad %s %q", name, t.Relation, t.SubjectID)
			}
			n = v
		}
		switch t.Relation {
		case projector.RelHolder:
			if st.Holder != "" {
				return fmt.Errorf("spice: projector %s has two holders (%s, %s)", name, st.Holder, t.SubjectID)
			}
			st.Holder = t.SubjectID
		case projector.RelHeartbeat:
			st.HeartbeatMs = max(st.HeartbeatMs, n)
		case projector.RelCursor:
			if st.Cursor != NoSeq {
				return fmt.Errorf("spice: projector %s has two cursors (%d, %d): refusing to guess", name, st.Cursor, n)
			}
			st.Cursor = n
		case projector.RelRewind:
			st.Rewind = n
		case projector.RelRebuild:
			st.Rebuild = n
		}
		return nil
	})
	if err != nil {
		return ProjectorState{}, fmt.Errorf("spice: read projector %s: %w", name, err)
	}
	return st, nil
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
	if !ValidName(cfg.Name) || !ValidName(cfg.Holder) {
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
		updates := []projector.Update{{Op: projector.OpTouch, Tuple: HolderTuple(cfg.Name, cfg.Holder)}}
		if st.HeartbeatMs != 0 && st.HeartbeatMs != hb {
			updates = append(updates, projector.Update{Op: projector.OpDelete, Tuple: HeartbeatTuple(cfg.Name, st.HeartbeatMs)})
		}
		updates = append(updates, projector.Update{Op: projector.OpTouch, Tuple: HeartbeatTuple(cfg.Name, hb)})
		var pre *v1.Precondition
		switch {
		case st.Holder == cfg.Holder:
			cfg.Metrics.SetLeaseState(LeaseHeld)
			return st, nil
		case st.Holder == "":
			pre = &v1.Precondition{Operation: v1.Precondition_OPERATION_MUST_NOT_MATCH,
				Filter: &v1.RelationshipFilter{ResourceType: projector.TypeProjector, OptionalResourceId: cfg.Name,
					OptionalRelation: projector.RelHolder}}
		case cfg.Takeover || stale:
			log.Warn("taking over the lease", "projector", cfg.Name, "previous_holder", st.Holder,
				"heartbeat_age", age.Round(time.Millisecond), "forced", cfg.Takeover)
			updates = append(updates, projector.Update{Op: projector.OpDelete, Tuple: HolderTuple(cfg.Name, st.Holder)})
			pre = mustMatch(HolderTuple(cfg.Name, st.Holder))
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
		_, err = cfg.Client.write(ctx, updates, []*v1.Precondition{pre})
		switch {
		case err == nil:
			st.Holder, st.HeartbeatMs = cfg.Holder, hb
			cfg.Metrics.SetLeaseState(LeaseHeld)
			log.Info("lease acquired", "projector", cfg.Name, "holder", cfg.Holder, "cursor", st.Cursor)
			return st, nil
		case Classify(err) == ClassPrecondition:
			continue // someone else moved first; look again
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

func mustMatch(t projector.Tuple) *v1.Precondition {
	return &v1.Precondition{Operation: v1.Precondition_OPERATION_MUST_MATCH, Filter: exactFilter(t)}
}

func exactFilter(t projector.Tuple) *v1.RelationshipFilter {
	return &v1.RelationshipFilter{ResourceType: t.ResourceType, OptionalResourceId: t.ResourceID,
		OptionalRelation: t.Relation, OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: t.SubjectType,
			OptionalSubjectId: t.SubjectID}}
}

// write is one WriteRelationships call.
func (c *Client) write(ctx context.Context, updates []projector.Update, pre []*v1.Precondition) (string, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.api.WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: toV1Updates(updates),
		OptionalPreconditions: pre})
	if err != nil {
		return "", err
	}
	return resp.GetWrittenAt().GetToken(), nil
}

// ErrNotHolder is returned by Release when this consumer no longer holds
// the lease.
var ErrNotHolder = errors.New("spice: not the lease holder")
