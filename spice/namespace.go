package spice

import (
	"fmt"
	"regexp"
	"strings"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/spaces-authz/spaces-authz/view"
)

// DefaultPrefix is the prefix of every definition the project writes unless
// configured otherwise (--schema-prefix): spaces_authz/space,
// spaces_authz/acct, … (DESIGN §3).
const DefaultPrefix = "spaces_authz"

// prefixRe is SpiceDB's pattern for the prefix part of a definition name:
// one or more segments, each like a definition name, joined by "/".
var prefixRe = regexp.MustCompile(`^[a-z][a-z0-9_]{1,62}[a-z0-9](/[a-z][a-z0-9_]{1,62}[a-z0-9])*$`)

// ValidatePrefix accepts "" (unprefixed: the names of versions before the
// prefix, for the upgrade) or a SpiceDB definition prefix.
func ValidatePrefix(p string) error {
	if p == "" || prefixRe.MatchString(p) {
		return nil
	}
	return fmt.Errorf("schema prefix %q: want lowercase segments of 3 to 64 letters, digits and _ (starting with a letter, "+
		"not ending with _), joined by / (SpiceDB's prefix/definition form), e.g. %q", p, DefaultPrefix)
}

// Namespace maps the view's definition names (view.TypeSpace, …) to
// SpiceDB's under a prefix. The projector, the rules and the oracle work in
// the view's names; only what crosses to SpiceDB (and to NATS subscribers,
// who check permissions against SpiceDB) carries the prefix. The zero value
// is unprefixed.
type Namespace struct{ prefix string }

// NewNamespace returns the namespace of a prefix ValidatePrefix accepts.
func NewNamespace(prefix string) (Namespace, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return Namespace{}, err
	}
	return Namespace{prefix: prefix}, nil
}

// MustNamespace is NewNamespace for constants; it panics on a bad prefix.
func MustNamespace(prefix string) Namespace {
	n, err := NewNamespace(prefix)
	if err != nil {
		panic(err)
	}
	return n
}

// Prefix is the namespace's prefix ("" when unprefixed).
func (n Namespace) Prefix() string { return n.prefix }

// Type is SpiceDB's name of a view definition.
func (n Namespace) Type(t string) string {
	if n.prefix == "" || t == "" {
		return t
	}
	return n.prefix + "/" + t
}

// Owns reports whether a SpiceDB definition name lies under the prefix:
// <prefix>/<name>, one segment, as the view's names are. A name under a
// prefix nested in ours (<prefix>/staging/space, another deployment's) is
// not ours. Unprefixed, nothing is: only the view's exact names are the
// project's.
func (n Namespace) Owns(name string) bool {
	if n.prefix == "" {
		return false
	}
	rest, ok := strings.CutPrefix(name, n.prefix+"/")
	return ok && rest != "" && !strings.Contains(rest, "/")
}

// Local is the view's name of a SpiceDB definition; a name outside the
// prefix is returned whole, so it never passes for one of the view's.
func (n Namespace) Local(name string) string {
	if !n.Owns(name) {
		return name
	}
	return name[len(n.prefix)+1:]
}

// Tuple is the tuple with SpiceDB's definition names.
func (n Namespace) Tuple(t view.Tuple) view.Tuple {
	t.ResourceType, t.SubjectType = n.Type(t.ResourceType), n.Type(t.SubjectType)
	return t
}

// String renders a tuple as SpiceDB names it (what zed shows).
func (n Namespace) String(t view.Tuple) string { return n.Tuple(t).String() }

// ToV1 converts a view tuple to the API's relationship.
func (n Namespace) ToV1(t view.Tuple) *v1.Relationship {
	return &v1.Relationship{
		Resource: &v1.ObjectReference{ObjectType: n.Type(t.ResourceType), ObjectId: t.ResourceID},
		Relation: t.Relation,
		Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: n.Type(t.SubjectType), ObjectId: t.SubjectID},
			OptionalRelation: t.SubjectRelation},
	}
}

// FromV1 converts an API relationship to a view tuple.
func (n Namespace) FromV1(r *v1.Relationship) view.Tuple {
	return view.Tuple{
		ResourceType:    n.Local(r.GetResource().GetObjectType()),
		ResourceID:      r.GetResource().GetObjectId(),
		Relation:        r.GetRelation(),
		SubjectType:     n.Local(r.GetSubject().GetObject().GetObjectType()),
		SubjectID:       r.GetSubject().GetObject().GetObjectId(),
		SubjectRelation: r.GetSubject().GetOptionalRelation(),
	}
}

// Filter is a copy of a filter written in the view's names, in SpiceDB's.
func (n Namespace) Filter(f *v1.RelationshipFilter) *v1.RelationshipFilter {
	if f == nil || n.prefix == "" {
		return f
	}
	out := &v1.RelationshipFilter{
		ResourceType: n.Type(f.GetResourceType()), OptionalResourceId: f.GetOptionalResourceId(),
		OptionalResourceIdPrefix: f.GetOptionalResourceIdPrefix(), OptionalRelation: f.GetOptionalRelation(),
	}
	if sf := f.GetOptionalSubjectFilter(); sf != nil {
		out.OptionalSubjectFilter = &v1.SubjectFilter{SubjectType: n.Type(sf.GetSubjectType()),
			OptionalSubjectId: sf.GetOptionalSubjectId(), OptionalRelation: sf.GetOptionalRelation()}
	}
	return out
}

func (n Namespace) updates(us []view.Update) []*v1.RelationshipUpdate {
	out := make([]*v1.RelationshipUpdate, len(us))
	for i, u := range us {
		op := v1.RelationshipUpdate_OPERATION_TOUCH
		if u.Op == view.OpDelete {
			op = v1.RelationshipUpdate_OPERATION_DELETE
		}
		out[i] = &v1.RelationshipUpdate{Operation: op, Relationship: n.ToV1(u.Tuple)}
	}
	return out
}

func (n Namespace) preconditions(pre []*v1.Precondition) []*v1.Precondition {
	if n.prefix == "" {
		return pre
	}
	out := make([]*v1.Precondition, len(pre))
	for i, p := range pre {
		out[i] = &v1.Precondition{Operation: p.GetOperation(), Filter: n.Filter(p.GetFilter())}
	}
	return out
}
