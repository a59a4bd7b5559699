package fanout

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spaces-authz/spaces-authz/view"
)

// SchemaJSON is the JSON Schema of a Message (fanout/change.schema.json).
//
//go:embed change.schema.json
var SchemaJSON []byte

// Version of the payload.
const Version = 1

// Message kinds.
const (
	KindChange   = "change"
	KindRejected = "rejected"
)

// Message is the JSON payload of one published change.
type Message struct {
	V    int    `json:"v"`
	Kind string `json:"kind"`
	// Seq is the stream event (or, for a resync, the event that triggered
	// it; 0 for a rebuild); OpIndex the op's index in the commit.
	Seq     int64  `json:"seq"`
	OpIndex int    `json:"op_index"`
	DID     string `json:"did"`
	Rev     string `json:"rev"`
	Time    string `json:"time,omitempty"`
	URI     string `json:"uri"`
	// Collection (NSID) and RKey of the record.
	Collection string `json:"collection"`
	RKey       string `json:"rkey"`
	// Action is create, update or delete.
	Action string `json:"action"`
	CID    string `json:"cid,omitempty"`
	// Record is the record as JSON (atproto data model); omitted for
	// deletes, and when larger than the limit (RecordOmitted).
	Record        json.RawMessage `json:"record,omitempty"`
	RecordOmitted bool            `json:"record_omitted,omitempty"`
	// Projected: the collection is projected into SpiceDB.
	Projected bool `json:"projected"`
	// Relationships the record produces under the rules (empty for a
	// delete or a rejected record: whatever it produced before is removed).
	Relationships []string `json:"relationships"`
	// Resync: found by a repo resync (a gap, a #sync, a rebuild) rather
	// than carried by a stream event.
	Resync   bool      `json:"resync,omitempty"`
	Rejected *Rejected `json:"rejected,omitempty"`
	// ZedToken is at least as fresh as the write that applied the change:
	// pass it as at_least_as_fresh to CheckPermission.
	ZedToken string `json:"zedtoken"`
}

// Rejected says why a record was rejected.
type Rejected struct {
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// build turns a change into its messages: the change itself, and for a
// rejected record a dead-letter message too.
func build(c view.Change, token, source, prefix string, maxRecord int, rel func(view.Tuple) string) ([]outMsg, error) {
	m := Message{V: Version, Kind: KindChange, Seq: c.Seq, OpIndex: c.OpIndex, DID: c.DID, Rev: c.Rev, Time: c.Time,
		URI: "at://" + c.DID + "/" + c.Collection + "/" + c.RKey, Collection: c.Collection, RKey: c.RKey, Action: c.Action,
		CID: c.CID, Projected: c.Projected, Resync: c.Resync, ZedToken: token, Relationships: []string{}}
	for _, t := range c.Produces {
		if c.Rejected == "" {
			m.Relationships = append(m.Relationships, rel(t))
		}
	}
	if c.Record != nil {
		b, err := json.Marshal(c.Record)
		if err != nil {
			return nil, fmt.Errorf("fanout: record %s as JSON: %w", m.URI, err)
		}
		if len(b) <= maxRecord {
			m.Record = b
		} else {
			m.RecordOmitted = true
		}
	}
	id := changeID(source, c)
	out := []outMsg{}
	if c.Rejected != "" {
		m.Rejected = &Rejected{Reason: string(c.Rejected), Detail: c.RejectDetail}
		dl := m
		dl.Kind = KindRejected
		if len(dl.Record) > 4096 {
			dl.Record, dl.RecordOmitted = nil, true // never the full body of a large rejected record
		}
		b, err := json.Marshal(dl)
		if err != nil {
			return nil, err
		}
		out = append(out, outMsg{subject: prefix + ".rejected." + token1(string(c.Rejected)), id: id + ":rejected", data: b})
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	out = append([]outMsg{{subject: prefix + ".change." + token1(c.Action) + "." + c.Collection, id: id, data: b}}, out...)
	return out, nil
}

// changeID is the deterministic Nats-Msg-Id of a change.
func changeID(source string, c view.Change) string {
	if c.Resync {
		return fmt.Sprintf("%s:resync:%s:%s:%s/%s", source, c.DID, c.Rev, c.Collection, c.RKey)
	}
	return fmt.Sprintf("%s:%d:%d", source, c.Seq, c.OpIndex)
}

// token1 makes s one subject token.
func token1(s string) string {
	if s == "" {
		return "_"
	}
	return strings.NewReplacer(".", "_", " ", "_", "*", "_", ">", "_").Replace(s)
}

type outMsg struct {
	subject string
	id      string
	data    []byte
}
