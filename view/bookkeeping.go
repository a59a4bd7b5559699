package view

import (
	"fmt"
	"strconv"
	"strings"
)

// The bookkeeping relationships: the projector's own state, written beside
// the data in the same WriteRelationships call (DESIGN §4). Every one of
// them is built here and nowhere else; README's "What is stored in SpiceDB"
// lists them.

// LineageTuple is the bookkeeping relationship recording that the record with
// bookkeeping ID recordID produces data tuple t:
// `lineage:<T-id>#produced_by@record:<R-id>`.
func LineageTuple(t Tuple, recordID string) Tuple {
	return Tuple{ResourceType: TypeLineage, ResourceID: LineageID(t), Relation: RelProducedBy,
		SubjectType: TypeRecord, SubjectID: recordID}
}

// LineageID encodes a data tuple as a bookkeeping ID:
// `<resource id>/<resource type>/<relation>/<subject type>/<subject relation or _>/<subject id or =>`.
// It starts with the owning DID, so a prefix read over `<did>/` returns all of
// a repo's lineage.
func LineageID(t Tuple) string {
	rel := t.SubjectRelation
	if rel == "" {
		rel = "_"
	}
	sub := t.SubjectID
	if sub == Wildcard {
		sub = wildcardPart
	}
	return t.ResourceID + "/" + t.ResourceType + "/" + t.Relation + "/" + t.SubjectType + "/" + rel + "/" + sub
}

// ParseLineageID reverses LineageID.
func ParseLineageID(id string) (Tuple, error) {
	parts := strings.SplitN(id, "/", 7)
	if len(parts) != 7 {
		return Tuple{}, fmt.Errorf("view: lineage id %q: too few parts", id)
	}
	t := Tuple{
		ResourceID:      parts[0] + "/" + parts[1],
		ResourceType:    parts[2],
		Relation:        parts[3],
		SubjectType:     parts[4],
		SubjectRelation: parts[5],
		SubjectID:       parts[6],
	}
	if t.SubjectRelation == "_" {
		t.SubjectRelation = ""
	}
	if t.SubjectID == wildcardPart {
		t.SubjectID = Wildcard
	}
	if _, _, err := ParseObjectID(t.ResourceID); err != nil {
		return Tuple{}, fmt.Errorf("view: lineage id %q: %w", id, err)
	}
	if t.ResourceType == "" || t.Relation == "" || t.SubjectType == "" || t.SubjectID == "" {
		return Tuple{}, fmt.Errorf("view: lineage id %q: empty part", id)
	}
	return t, nil
}

// RepoID is the bookkeeping object ID of a repo: its encoded DID.
func RepoID(did string) string { return EncodeDID(did) }

// RevTuple records the last applied rev of a repo: `repo:<did>#rev@rev:<rev>`.
func RevTuple(did, rev string) Tuple {
	return Tuple{ResourceType: TypeRepo, ResourceID: RepoID(did), Relation: RelRev, SubjectType: TypeRev, SubjectID: rev}
}

// SourceTuple records which source owns a repo:
// repo:<did>#source@projector:<source>.
func SourceTuple(did, source string) Tuple {
	return Tuple{ResourceType: TypeRepo, ResourceID: RepoID(did), Relation: RelSource, SubjectType: TypeProjector,
		SubjectID: source}
}

// DesyncTuple marks a repo whose resync failed: repo:<did>#desync@seq:<seq>.
func DesyncTuple(did string, seq int64) Tuple {
	return Tuple{ResourceType: TypeRepo, ResourceID: RepoID(did), Relation: RelDesync, SubjectType: TypeSeq,
		SubjectID: strconv.FormatInt(seq, 10)}
}

// IncompleteTuple marks a repo whose last snapshot lacked record blocks:
// repo:<did>#incomplete@seq:<seq>.
func IncompleteTuple(did string, seq int64) Tuple {
	return Tuple{ResourceType: TypeRepo, ResourceID: RepoID(did), Relation: RelIncomplete, SubjectType: TypeSeq,
		SubjectID: strconv.FormatInt(seq, 10)}
}

// ClaimTuple records source's pending claim of a repo:
// repo:<did>#claim@projector:<source>.
func ClaimTuple(did, source string) Tuple {
	return Tuple{ResourceType: TypeRepo, ResourceID: RepoID(did), Relation: RelClaim, SubjectType: TypeProjector,
		SubjectID: source}
}

// EpochTuple is a source's ownership epoch:
// projector:<source>#epoch@seq:<n>.
func EpochTuple(source string, n int64) Tuple {
	return projectorTuple(source, RelEpoch, TypeSeq, strconv.FormatInt(n, 10))
}

// StatusTuple records a repo's account status and the seq of the event that
// set it: `repo:<did>#status@status:<status>-<seq>`.
func StatusTuple(did, status string, seq int64) Tuple {
	return Tuple{ResourceType: TypeRepo, ResourceID: RepoID(did), Relation: RelStatus, SubjectType: TypeStatus,
		SubjectID: fmt.Sprintf("%s-%d", status, seq)}
}

// ParseStatusID reverses the subject ID of StatusTuple.
func ParseStatusID(id string) (status string, seq int64, err error) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return "", 0, fmt.Errorf("view: status id %q: want <status>-<seq>", id)
	}
	if _, err := fmt.Sscanf(id[i+1:], "%d", &seq); err != nil {
		return "", 0, fmt.Errorf("view: status id %q: %w", id, err)
	}
	return id[:i], seq, nil
}

// RepoState is a repo's stored bookkeeping (repo:<did>#rev and #status).
type RepoState struct {
	DID       string
	Rev       string
	Status    string // "" or "active" when active
	StatusSeq int64
	// StaleStatuses are the subject IDs of further status tuples (Status
	// is the one with the highest seq); they should not exist.
	StaleStatuses []string
	// StaleRevs are further rev tuples (Rev is the highest); they should
	// not exist either.
	StaleRevs []string
	// Source is the source that owns the repo ("" when none is recorded:
	// a repo written before ownership existed).
	Source string
	// Desync: the repo's last resync failed (at DesyncSeq): what SpiceDB
	// holds for it may be wrong until a resync succeeds.
	Desync    bool
	DesyncSeq int64
	// Incomplete: the repo's last snapshot (at IncompleteSeq) named
	// records without their block; it is read again until one is whole.
	Incomplete    bool
	IncompleteSeq int64
	// Claims are the sources with a pending claim of the repo (ClaimTuple).
	Claims []string
}

// LineageEntry is one stored lineage relationship, parsed: record Path
// (`collection/rkey`) produces Tuple.
type LineageEntry struct {
	Tuple Tuple
	Path  string
}

// RepoStates folds stored repo:<did> tuples into each repo's state. The
// zero value is ready to use.
type RepoStates struct {
	byDID map[string]*RepoState
	order []string
}

// Add folds one repo:<did> tuple in. Of several status tuples (there
// should be one) the one with the highest seq wins; the others are listed
// as stale.
func (r *RepoStates) Add(t Tuple) error {
	did, err := DecodeDID(t.ResourceID)
	if err != nil {
		return fmt.Errorf("stored repo state %s: %w", t, err)
	}
	if r.byDID == nil {
		r.byDID = map[string]*RepoState{}
	}
	st := r.byDID[did]
	if st == nil {
		st = &RepoState{DID: did}
		r.byDID[did] = st
		r.order = append(r.order, did)
	}
	switch t.Relation {
	case RelRev:
		switch {
		case st.Rev == "":
			st.Rev = t.SubjectID
		case t.SubjectID > st.Rev:
			st.StaleRevs = append(st.StaleRevs, st.Rev)
			st.Rev = t.SubjectID
		default:
			st.StaleRevs = append(st.StaleRevs, t.SubjectID)
		}
	case RelSource:
		if st.Source != "" && st.Source != t.SubjectID {
			return fmt.Errorf("stored repo state %s: two sources (%s, %s)", t, st.Source, t.SubjectID)
		}
		st.Source = t.SubjectID
	case RelDesync:
		n, err := strconv.ParseInt(t.SubjectID, 10, 64)
		if err != nil {
			return fmt.Errorf("stored repo state %s: %w", t, err)
		}
		st.Desync, st.DesyncSeq = true, max(st.DesyncSeq, n)
	case RelClaim:
		st.Claims = append(st.Claims, t.SubjectID)
	case RelIncomplete:
		n, err := strconv.ParseInt(t.SubjectID, 10, 64)
		if err != nil {
			return fmt.Errorf("stored repo state %s: %w", t, err)
		}
		st.Incomplete, st.IncompleteSeq = true, max(st.IncompleteSeq, n)
	case RelStatus:
		status, seq, err := ParseStatusID(t.SubjectID)
		if err != nil {
			return fmt.Errorf("stored repo state %s: %w", t, err)
		}
		switch {
		case st.Status == "":
			st.Status, st.StatusSeq = status, seq
		case seq > st.StatusSeq:
			st.StaleStatuses = append(st.StaleStatuses, StatusTuple(did, st.Status, st.StatusSeq).SubjectID)
			st.Status, st.StatusSeq = status, seq
		default:
			st.StaleStatuses = append(st.StaleStatuses, t.SubjectID)
		}
	}
	return nil
}

// List returns the states in the order their repos were first seen.
func (r *RepoStates) List() []RepoState {
	out := make([]RepoState, 0, len(r.order))
	for _, d := range r.order {
		out = append(out, *r.byDID[d])
	}
	return out
}

// ParseLineage reads one stored lineage relationship of repo did.
func ParseLineage(did string, t Tuple) (LineageEntry, error) {
	data, err := ParseLineageID(t.ResourceID)
	if err != nil {
		return LineageEntry{}, fmt.Errorf("stored lineage %s: %w", t, err)
	}
	rdid, coll, rkey, err := ParseRecordID(t.SubjectID)
	if err != nil {
		return LineageEntry{}, fmt.Errorf("stored lineage %s: %w", t, err)
	}
	if rdid != did {
		return LineageEntry{}, fmt.Errorf("stored lineage %s: record of %s under %s", t, rdid, did)
	}
	return LineageEntry{Tuple: data, Path: coll + "/" + rkey}, nil
}

// SplitPath splits a record path `collection/rkey`.
func SplitPath(path string) (collection, rkey string) {
	if i := strings.IndexByte(path, '/'); i >= 0 {
		return path[:i], path[i+1:]
	}
	return path, ""
}

func projectorTuple(name, rel, subType, subID string) Tuple {
	return Tuple{ResourceType: TypeProjector, ResourceID: name, Relation: rel, SubjectType: subType, SubjectID: subID}
}

// HolderTuple is the lease: projector:<name>#holder@consumer:<holder>.
func HolderTuple(name, holder string) Tuple {
	return projectorTuple(name, RelHolder, TypeConsumer, holder)
}

// HeartbeatTuple is the lease holder's heartbeat:
// projector:<name>#heartbeat@heartbeat:<unix ms>.
func HeartbeatTuple(name string, ms int64) Tuple {
	return projectorTuple(name, RelHeartbeat, TypeHeartbeat, strconv.FormatInt(ms, 10))
}

// CursorTuple is a source's cursor: projector:<source>#cursor@cursor:<seq>.
func CursorTuple(source string, seq int64) Tuple {
	return projectorTuple(source, RelCursor, TypeCursor, strconv.FormatInt(seq, 10))
}

// MarkerTuple is a source's rewind or rebuild marker:
// projector:<source>#<rewind|rebuild>@seq:<seq>.
func MarkerTuple(source, rel string, seq int64) Tuple {
	return projectorTuple(source, rel, TypeSeq, strconv.FormatInt(seq, 10))
}
