package view

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"gopkg.in/yaml.v3"
)

//go:embed rules.default.yaml
var defaultRulesYAML []byte

// DefaultRulesYAML returns the embedded default rules file (DESIGN §2).
func DefaultRulesYAML() []byte { return slices.Clone(defaultRulesYAML) }

// Subject kinds a relation record may name, as written in the rules file.
const (
	SubjectAcct        = "acct"
	SubjectAcctAny     = "acct:*"
	SubjectSpace       = "space"
	SubjectGroupMember = "group#member"
)

// Rules says which collections are projected and how. Build it with
// ParseRules, LoadRules or DefaultRules; the zero value is not usable.
type Rules struct {
	Version int `yaml:"version"`
	Space   struct {
		Collection  string `yaml:"collection"`
		BubbleField string `yaml:"bubbleField"`
	} `yaml:"space"`
	Group struct {
		Collection string `yaml:"collection"`
	} `yaml:"group"`
	Relation struct {
		Collection string `yaml:"collection"`
		Fields     struct {
			ResourceType    string `yaml:"resourceType"`
			Resource        string `yaml:"resource"`
			Permission      string `yaml:"permission"`
			SubjectType     string `yaml:"subjectType"`
			Subject         string `yaml:"subject"`
			SubjectRelation string `yaml:"subjectRelation"`
		} `yaml:"fields"`
		// Grants maps resource type → relation → allowed subject kinds.
		Grants map[string]map[string][]string `yaml:"grants"`
	} `yaml:"relation"`
	// PublishAllCollections turns on raw mode for the NATS fan-out.
	PublishAllCollections bool `yaml:"publishAllCollections"`
}

// DefaultRules returns the embedded default rules.
func DefaultRules() *Rules {
	r, err := ParseRules(defaultRulesYAML)
	if err != nil {
		panic(fmt.Sprintf("view: embedded rules are invalid: %v", err))
	}
	return r
}

// LoadRules reads and validates a rules file; an empty path gives the defaults.
func LoadRules(path string) (*Rules, error) {
	if path == "" {
		return DefaultRules(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("view: read rules: %w", err)
	}
	r, err := ParseRules(b)
	if err != nil {
		return nil, fmt.Errorf("view: rules %s: %w", path, err)
	}
	return r, nil
}

// ParseRules decodes and validates a rules file. Unknown keys are errors, so
// a typo can't silently turn a rule off.
func ParseRules(b []byte) (*Rules, error) {
	var r Rules
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("view: parse rules: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// ErrInvalidRules is wrapped by every rules validation error.
var ErrInvalidRules = errors.New("invalid rules")

// Validate checks the rules against the fixed schema and security rules: only
// space and group resources, never owner/inherits or bookkeeping relations,
// the wildcard only on viewer, space subjects only on parent, distinct
// collections that are valid NSIDs.
func (r *Rules) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("view: %w: %s", ErrInvalidRules, fmt.Sprintf(format, args...))
	}
	if r.Version != 1 {
		return bad("version: want 1, got %d", r.Version)
	}
	cols := map[string]string{"space.collection": r.Space.Collection, "group.collection": r.Group.Collection,
		"relation.collection": r.Relation.Collection}
	seen := map[string]string{}
	for field, c := range cols {
		if _, err := syntax.ParseNSID(c); err != nil {
			return bad("%s: %q is not an NSID", field, c)
		}
		if other, dup := seen[c]; dup {
			return bad("%s and %s name the same collection %q", field, other, c)
		}
		seen[c] = field
	}
	f := r.Relation.Fields
	for name, v := range map[string]string{"resourceType": f.ResourceType, "resource": f.Resource,
		"permission": f.Permission, "subjectType": f.SubjectType, "subject": f.Subject,
		"subjectRelation": f.SubjectRelation, "space.bubbleField": r.Space.BubbleField} {
		if v == "" {
			return bad("relation.fields.%s is empty", name)
		}
	}
	if len(r.Relation.Grants) == 0 {
		return bad("relation.grants is empty")
	}
	for rt, rels := range r.Relation.Grants {
		if rt != TypeSpace && rt != TypeGroup {
			return bad("relation.grants: resource type %q is not space or group", rt)
		}
		for rel, subjects := range rels {
			if !allowedRelation(rt, rel) {
				return bad("relation.grants.%s: relation %q can't be granted by a record", rt, rel)
			}
			if len(subjects) == 0 {
				return bad("relation.grants.%s.%s: no subjects", rt, rel)
			}
			for _, s := range subjects {
				switch s {
				case SubjectAcct, SubjectGroupMember:
				case SubjectAcctAny:
					if rt != TypeSpace || rel != "viewer" {
						return bad("relation.grants.%s.%s: the wildcard subject is only allowed for space viewer", rt, rel)
					}
				case SubjectSpace:
					if rt != TypeSpace || rel != RelParent {
						return bad("relation.grants.%s.%s: space subjects are only allowed for space parent", rt, rel)
					}
				default:
					return bad("relation.grants.%s.%s: unknown subject %q", rt, rel, s)
				}
				if s == SubjectGroupMember && rt == TypeGroup {
					return bad("relation.grants.group.%s: groups don't nest", rel)
				}
			}
		}
	}
	return nil
}

// allowedRelation reports whether rel on resource type rt exists in the
// schema and may come from a relation record.
func allowedRelation(rt, rel string) bool {
	switch rt {
	case TypeSpace:
		return slices.Contains([]string{RelParent, "direct_member", "admin", "editor", "viewer"}, rel)
	case TypeGroup:
		return rel == "direct_member"
	}
	return false
}

// Projects reports whether records of collection are projected into SpiceDB.
func (r *Rules) Projects(collection string) bool {
	return collection == r.Space.Collection || collection == r.Group.Collection || collection == r.Relation.Collection
}

// Collections lists the projected collections.
func (r *Rules) Collections() []string {
	return []string{r.Space.Collection, r.Group.Collection, r.Relation.Collection}
}

// MatchPath reports whether an op path `collection/rkey` is projected, without
// allocating; it is the filter applied before any CAR is decoded.
func (r *Rules) MatchPath(path string) bool {
	i := strings.IndexByte(path, '/')
	if i < 0 {
		return false
	}
	return r.Projects(path[:i])
}
