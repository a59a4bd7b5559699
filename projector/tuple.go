package projector

import (
	"fmt"
	"strings"
)

// Definitions and relations of the SpiceDB schema that the projector writes.
// The data definitions come from DESIGN §2; the rest is the projector's own
// bookkeeping, which a record can never produce.
const (
	TypeAcct  = "acct"
	TypeSpace = "space"
	TypeGroup = "group"

	RelOwner    = "owner"
	RelInherits = "inherits"
	RelParent   = "parent"
	RelMember   = "member"

	TypeLineage   = "lineage"
	RelProducedBy = "produced_by"
	TypeRecord    = "record"

	TypeRepo   = "repo"
	RelRev     = "rev"
	TypeRev    = "rev"
	RelStatus  = "status"
	TypeStatus = "status"

	TypeProjector = "projector"
	RelHolder     = "holder"
	TypeConsumer  = "consumer"
	RelHeartbeat  = "heartbeat"
	TypeHeartbeat = "heartbeat"
	RelCursor     = "cursor"
	TypeCursor    = "cursor"
	RelRewind     = "rewind"
	RelRebuild    = "rebuild"
	TypeSeq       = "seq"
)

// Tuple is one SpiceDB relationship:
// `ResourceType:ResourceID#Relation@SubjectType:SubjectID[#SubjectRelation]`.
// It is comparable and used directly as a map key.
type Tuple struct {
	ResourceType    string
	ResourceID      string
	Relation        string
	SubjectType     string
	SubjectID       string
	SubjectRelation string
}

// String renders the tuple in SpiceDB's text syntax.
func (t Tuple) String() string {
	s := t.ResourceType + ":" + t.ResourceID + "#" + t.Relation + "@" + t.SubjectType + ":" + t.SubjectID
	if t.SubjectRelation != "" {
		s += "#" + t.SubjectRelation
	}
	return s
}

// Valid reports whether both object IDs match SpiceDB's pattern.
func (t Tuple) Valid() bool {
	return ValidObjectID(t.ResourceID) && t.ResourceID != Wildcard && ValidObjectID(t.SubjectID)
}

// Op is the operation of an Update.
type Op uint8

// Update operations. TOUCH is idempotent; DELETE of a missing relationship is
// not an error in SpiceDB.
const (
	OpTouch Op = iota + 1
	OpDelete
)

func (o Op) String() string {
	switch o {
	case OpTouch:
		return "touch"
	case OpDelete:
		return "delete"
	}
	return "unknown"
}

// Update is one relationship update decided by the projector.
type Update struct {
	Op    Op
	Tuple Tuple
}

func (u Update) String() string { return u.Op.String() + " " + u.Tuple.String() }

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
		return Tuple{}, fmt.Errorf("projector: lineage id %q: too few parts", id)
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
		return Tuple{}, fmt.Errorf("projector: lineage id %q: %w", id, err)
	}
	if t.ResourceType == "" || t.Relation == "" || t.SubjectType == "" || t.SubjectID == "" {
		return Tuple{}, fmt.Errorf("projector: lineage id %q: empty part", id)
	}
	return t, nil
}

// RepoID is the bookkeeping object ID of a repo: its encoded DID.
func RepoID(did string) string { return EncodeDID(did) }

// RevTuple records the last applied rev of a repo: `repo:<did>#rev@rev:<rev>`.
func RevTuple(did, rev string) Tuple {
	return Tuple{ResourceType: TypeRepo, ResourceID: RepoID(did), Relation: RelRev, SubjectType: TypeRev, SubjectID: rev}
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
		return "", 0, fmt.Errorf("projector: status id %q: want <status>-<seq>", id)
	}
	if _, err := fmt.Sscanf(id[i+1:], "%d", &seq); err != nil {
		return "", 0, fmt.Errorf("projector: status id %q: %w", id, err)
	}
	return id[:i], seq, nil
}
