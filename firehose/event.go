package firehose

import (
	"github.com/ipfs/go-cid"
)

// Kind is the type of a stream event.
type Kind uint8

// Event kinds carried by subscribeRepos. #info has no seq and no DID and is
// delivered separately (Handler.HandleInfo).
const (
	KindCommit Kind = iota + 1
	KindSync
	KindIdentity
	KindAccount
)

var kindNames = [...]string{KindCommit: "commit", KindSync: "sync", KindIdentity: "identity", KindAccount: "account"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// Action of a record operation.
type Action string

// Record operations in a #commit.
const (
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
)

// Event is one sequenced event of the stream, decoded. Fields that don't
// apply to its Kind are zero.
type Event struct {
	Seq  int64
	Kind Kind
	DID  string
	// Time is the event's `time` field as sent (RFC 3339).
	Time string

	// Rev is the repo revision of a #commit or #sync.
	Rev string
	// Since is the rev of the previous commit of the repo ("" when absent).
	Since string
	// TooBig is the deprecated #commit flag: the ops are incomplete.
	TooBig bool
	// Ops are the commit's operations whose paths passed the filter, in
	// commit order, with their records decoded.
	Ops []Op
	// OpCount is the number of ops in the commit before filtering.
	OpCount int
	// Malformed is set (to a bad-op reason) when the commit had ops this
	// client could not read and that may touch a projected collection: Ops
	// is then incomplete, and the consumer must read the repo instead.
	Malformed string
	// Unverified is set (to an Unverified* reason) when Config.Verifier
	// refused the commit: its signature, its CAR or its ops don't check
	// out. Its ops must not be applied; the consumer reads the repo
	// instead. Only commits with ops that passed the filter are verified.
	Unverified string
	// Unchecked is set on a #commit that was not verified although
	// Config.Verifier is set (a Malformed one, or no op passed the filter
	// and Config.VerifyAlso did not ask for it): nothing in it, its ops,
	// rev and since included, is the account's word. The consumer must
	// not apply its ops nor take its rev.
	Unchecked bool
	// SyncData is the MST root CID named by a #sync's commit block, when it
	// could be read (cid.Undef otherwise).
	SyncData cid.Cid

	// Active and Status come from #account.
	Active bool
	Status string

	// Handle comes from #identity.
	Handle string

	// FrameBytes is the size of the frame the event came in.
	FrameBytes int
}

// Op is one record operation of a #commit.
type Op struct {
	Action     Action
	Collection string
	RKey       string
	// CID is the record's CID for creates and updates.
	CID cid.Cid
	// Record is the decoded record for creates and updates; nil for deletes
	// and when Err is set.
	Record map[string]any
	// Err is set when the record could not be read; the caller rejects it.
	Err *OpError
}

// Path is the op's repo path `collection/rkey`.
func (o *Op) Path() string { return o.Collection + "/" + o.RKey }

// Info is an #info message (e.g. OutdatedCursor). It has no seq.
type Info struct {
	Name    string
	Message string
}

// InfoOutdatedCursor is the #info name sent when the requested cursor is
// older than the PDS's replay window: events may be missing.
const InfoOutdatedCursor = "OutdatedCursor"

// InfoLiveGap is not sent by a PDS: the client reports it when it had to
// reconnect without a cursor (no event was applied yet on a live start), so
// events between the two connections may be missing.
const InfoLiveGap = "LiveGap"
