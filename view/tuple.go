package view

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
	// RelSource names the source that owns a repo:
	// repo:<did>#source@projector:<source>.
	RelSource = "source"
	// RelDesync marks a repo whose resync failed: repo:<did>#desync@seq:<seq>.
	RelDesync = "desync"
	// RelIncomplete marks a repo whose last snapshot named records without
	// their block: repo:<did>#incomplete@seq:<seq>. It is read again until
	// a snapshot is whole.
	RelIncomplete = "incomplete"
	// RelClaim records a source's pending takeover of a repo another
	// source owns, whose activation on the source's PDS was seen but whose
	// claim could not complete yet: repo:<did>#claim@projector:<source>.
	RelClaim = "claim"

	TypeProjector = "projector"
	RelHolder     = "holder"
	TypeConsumer  = "consumer"
	RelHeartbeat  = "heartbeat"
	TypeHeartbeat = "heartbeat"
	RelCursor     = "cursor"
	TypeCursor    = "cursor"
	RelRewind     = "rewind"
	RelRebuild    = "rebuild"
	// RelEpoch is a source's ownership epoch: projector:<source>#epoch@seq:<n>.
	// It moves when another source takes a repo over, which fails every
	// write of the old owner in flight (they carry it as a precondition).
	RelEpoch = "epoch"
	TypeSeq  = "seq"
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

// Guard is a condition a write needs SpiceDB to meet when it commits (a
// precondition of the call): Tuple exists, or, with Absent, no
// relationship has Tuple's resource and relation, whatever its subject.
type Guard struct {
	Tuple  Tuple
	Absent bool
}

func (g Guard) String() string {
	if g.Absent {
		return "no " + g.Tuple.ResourceType + ":" + g.Tuple.ResourceID + "#" + g.Tuple.Relation
	}
	return g.Tuple.String()
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
