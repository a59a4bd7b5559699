package view

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Reason is the bounded label under which a rejected record is counted.
type Reason string

// Rejection reasons. The set is closed: it is a metric label.
const (
	ReasonMalformed          Reason = "malformed_record"
	ReasonMissingField       Reason = "missing_field"
	ReasonInvalidField       Reason = "invalid_field"
	ReasonInvalidRecordKey   Reason = "invalid_record_key"
	ReasonIDTooLong          Reason = "id_too_long"
	ReasonForeignResource    Reason = "foreign_resource"
	ReasonForeignParent      Reason = "foreign_parent"
	ReasonRelationNotAllowed Reason = "relation_not_allowed"
	ReasonSubjectNotAllowed  Reason = "subject_not_allowed"
	ReasonWildcardNotAllowed Reason = "wildcard_not_allowed"
	ReasonCIDMismatch        Reason = "cid_mismatch"
	ReasonMissingBlock       Reason = "missing_block"
	ReasonSpiceDBRefused     Reason = "spicedb_refused"
)

// AllReasons lists every Reason, for pre-registering metric series.
var AllReasons = []Reason{ReasonMalformed, ReasonMissingField, ReasonInvalidField, ReasonInvalidRecordKey,
	ReasonIDTooLong, ReasonForeignResource, ReasonForeignParent, ReasonRelationNotAllowed,
	ReasonSubjectNotAllowed, ReasonWildcardNotAllowed, ReasonCIDMismatch, ReasonMissingBlock, ReasonSpiceDBRefused}

// Rejection is the error returned for a record that must not be projected.
// Detail is short and never holds the record body.
type Rejection struct {
	Reason Reason
	Detail string
}

func (r *Rejection) Error() string { return string(r.Reason) + ": " + r.Detail }

func reject(reason Reason, format string, args ...any) *Rejection {
	return &Rejection{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Project maps one record of repo did to the data tuples it produces under
// the rules. It is pure: no I/O, no state. A record of a collection that is
// not projected produces nothing. A record that breaks a rule returns a
// *Rejection and no tuples; the caller then removes whatever it produced
// before. Every tuple returned has valid object IDs and a lineage ID within
// SpiceDB's limits.
func (r *Rules) Project(did, collection, rkey string, value map[string]any) ([]Tuple, error) {
	if !r.Projects(collection) {
		return nil, nil
	}
	if _, err := syntax.ParseDID(did); err != nil {
		return nil, reject(ReasonInvalidField, "repo did: %v", err)
	}
	if _, err := syntax.ParseRecordKey(rkey); err != nil {
		return nil, reject(ReasonInvalidRecordKey, "%v", err)
	}
	recordID := RecordID(did, collection, rkey)
	if len(recordID) > MaxObjectIDLen {
		return nil, reject(ReasonIDTooLong, "record id is %d bytes", len(recordID))
	}
	var tuples []Tuple
	switch collection {
	case r.Space.Collection:
		bubble := false
		if v, ok := value[r.Space.BubbleField]; ok && v != nil {
			b, isBool := v.(bool)
			if !isBool {
				return nil, reject(ReasonInvalidField, "%s: want a boolean, got %T", r.Space.BubbleField, v)
			}
			bubble = b
		}
		id := ObjectID(did, rkey)
		tuples = append(tuples, Tuple{ResourceType: TypeSpace, ResourceID: id, Relation: RelOwner,
			SubjectType: TypeAcct, SubjectID: EncodeDID(did)})
		if !bubble {
			tuples = append(tuples, Tuple{ResourceType: TypeSpace, ResourceID: id, Relation: RelInherits,
				SubjectType: TypeAcct, SubjectID: Wildcard})
		}
	case r.Group.Collection:
		tuples = append(tuples, Tuple{ResourceType: TypeGroup, ResourceID: ObjectID(did, rkey), Relation: RelOwner,
			SubjectType: TypeAcct, SubjectID: EncodeDID(did)})
	case r.Relation.Collection:
		t, err := r.projectRelation(did, value)
		if err != nil {
			return nil, err
		}
		tuples = append(tuples, t)
	}
	for _, t := range tuples {
		if !t.Valid() {
			return nil, reject(ReasonIDTooLong, "object id over %d bytes or outside SpiceDB's alphabet", MaxObjectIDLen)
		}
		if n := len(LineageID(t)); n > MaxObjectIDLen {
			return nil, reject(ReasonIDTooLong, "lineage id is %d bytes", n)
		}
	}
	return tuples, nil
}

// relationRecord is the fields of a relation record, as strings.
type relationRecord struct {
	resourceType, resource, permission, subjectType, subject, subjectRelation string
}

// readRelation reads a relation record's fields: all are required strings
// but the subject relation.
func (r *Rules) readRelation(value map[string]any) (relationRecord, error) {
	var rec relationRecord
	f := r.Relation.Fields
	for _, fd := range []struct {
		name     string
		dst      *string
		required bool
	}{{f.ResourceType, &rec.resourceType, true}, {f.Resource, &rec.resource, true},
		{f.Permission, &rec.permission, true}, {f.SubjectType, &rec.subjectType, true},
		{f.Subject, &rec.subject, true}, {f.SubjectRelation, &rec.subjectRelation, false}} {
		v, ok := value[fd.name]
		if !ok || v == nil {
			if fd.required {
				return rec, reject(ReasonMissingField, "%s is missing", fd.name)
			}
			continue
		}
		s, isStr := v.(string)
		if !isStr {
			return rec, reject(ReasonInvalidField, "%s: want a string, got %T", fd.name, v)
		}
		if fd.required && s == "" {
			return rec, reject(ReasonMissingField, "%s is empty", fd.name)
		}
		*fd.dst = s
	}
	return rec, nil
}

// projectRelation maps a relation record of repo did to its one tuple, or
// rejects it: the resource must be did's own (security rule 1), the
// relation and subject allowed by the rules (rule 3), the wildcard only
// where allowed (rule 4), a parent only a space of did (rule 2).
func (r *Rules) projectRelation(did string, value map[string]any) (Tuple, error) {
	rec, err := r.readRelation(value)
	if err != nil {
		return Tuple{}, err
	}
	rels, ok := r.Relation.Grants[rec.resourceType]
	if !ok {
		return Tuple{}, reject(ReasonRelationNotAllowed, "resource type %q is not allowed", Clip(rec.resourceType))
	}
	allowed, ok := rels[rec.permission]
	if !ok {
		return Tuple{}, reject(ReasonRelationNotAllowed, "relation %q on %s is not allowed", Clip(rec.permission),
			rec.resourceType)
	}
	resDID, resKey, err := splitRef(rec.resource)
	if err != nil {
		return Tuple{}, reject(ReasonInvalidField, "%s: %v", r.Relation.Fields.Resource, err)
	}
	// Security rule 1: the parsed DIDs must be equal, never a prefix match.
	if resDID != did {
		return Tuple{}, reject(ReasonForeignResource, "resource belongs to %s", Clip(resDID))
	}
	kind, err := subjectKind(rec)
	if err != nil {
		return Tuple{}, err
	}
	if !slices.Contains(allowed, kind) {
		if kind == SubjectAcctAny {
			return Tuple{}, reject(ReasonWildcardNotAllowed, "wildcard subject on %s#%s", rec.resourceType, rec.permission)
		}
		return Tuple{}, reject(ReasonSubjectNotAllowed, "subject %s is not allowed on %s#%s", kind, rec.resourceType,
			rec.permission)
	}
	t := Tuple{ResourceType: rec.resourceType, ResourceID: ObjectID(resDID, resKey), Relation: rec.permission,
		SubjectType: rec.subjectType}
	if t.SubjectID, err = r.subjectID(did, rec.subject, kind); err != nil {
		return Tuple{}, err
	}
	if kind == SubjectGroupMember {
		t.SubjectRelation = RelMember
	}
	return t, nil
}

// subjectKind names the record's subject as the rules file does (acct,
// acct:*, space, group#member).
func subjectKind(rec relationRecord) (string, error) {
	switch rec.subjectType {
	case TypeAcct:
		if rec.subjectRelation != "" {
			return "", reject(ReasonSubjectNotAllowed, "acct subjects take no subject relation")
		}
		if rec.subject == Wildcard {
			return SubjectAcctAny, nil
		}
		return SubjectAcct, nil
	case TypeSpace:
		if rec.subjectRelation != "" {
			return "", reject(ReasonSubjectNotAllowed, "space subjects take no subject relation")
		}
		return SubjectSpace, nil
	case TypeGroup:
		if rec.subjectRelation != RelMember {
			return "", reject(ReasonSubjectNotAllowed, "group subjects need subject relation %q", RelMember)
		}
		return SubjectGroupMember, nil
	}
	return "", reject(ReasonSubjectNotAllowed, "subject type %q is not allowed", Clip(rec.subjectType))
}

// subjectID encodes the subject of a relation record of repo did.
func (r *Rules) subjectID(did, subject, kind string) (string, error) {
	field := r.Relation.Fields.Subject
	switch kind {
	case SubjectAcctAny:
		return Wildcard, nil
	case SubjectAcct:
		if _, err := syntax.ParseDID(subject); err != nil {
			return "", reject(ReasonInvalidField, "%s: %v", field, err)
		}
		return EncodeDID(subject), nil
	}
	subDID, subKey, err := splitRef(subject)
	if err != nil {
		return "", reject(ReasonInvalidField, "%s: %v", field, err)
	}
	// Security rule 2: a parent is always a space of the repo itself.
	if kind == SubjectSpace && subDID != did {
		return "", reject(ReasonForeignParent, "parent space belongs to %s", Clip(subDID))
	}
	return ObjectID(subDID, subKey), nil
}

// splitRef parses `<did>/<key>` with both parts syntax-checked.
func splitRef(ref string) (did, key string, err error) {
	d, k, ok := strings.Cut(ref, "/")
	if !ok {
		return "", "", fmt.Errorf("%q: want <did>/<key>", Clip(ref))
	}
	if _, err := syntax.ParseDID(d); err != nil {
		return "", "", fmt.Errorf("%q: %w", Clip(d), err)
	}
	if _, err := syntax.ParseRecordKey(k); err != nil {
		return "", "", fmt.Errorf("%q: %w", Clip(k), err)
	}
	return d, k, nil
}

// Clip bounds an input-supplied string (from a record or a frame) before it
// goes into an error or a log line.
func Clip(s string) string {
	const maxLen = 96
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "…"
}
