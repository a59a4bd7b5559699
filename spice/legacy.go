package spice

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/view"
)

// LegacyPlan is the removal of the project's unprefixed definitions (the
// names of the versions before the prefix) after an upgrade.
type LegacyPlan struct {
	// Definitions are the unprefixed definitions of the project's that
	// SpiceDB still holds.
	Definitions []string
	// NotRebuilt are the projectors of the old names whose view under the
	// client's prefix is not built yet (see notRebuilt).
	NotRebuilt []string
	// Conflict is set (wrapping ErrSchemaConflict) when a definition that
	// stays refers to one that would go: RemoveLegacy refuses the plan.
	Conflict error
	// schema is SpiceDB's schema without Definitions; base is SpiceDB's
	// schema as the plan read it.
	schema, base string
}

// PlanRemoveLegacy finds the unprefixed definitions of template (the
// project's schema in the view's names) in SpiceDB's schema. A definition
// of one of those names counts as the project's only if it declares
// nothing the project's does not (another application's `group` is left
// alone). A definition that stays and refers to one that would go makes
// the plan's Conflict.
func (c *Client) PlanRemoveLegacy(ctx context.Context, template string) (LegacyPlan, error) {
	if c.ns.prefix == "" {
		return LegacyPlan{}, fmt.Errorf("spice: the client is unprefixed: its definitions are the unprefixed ones")
	}
	tmpl, _, err := ParseSchema(template)
	if err != nil {
		return LegacyPlan{}, fmt.Errorf("spice: the project's schema: %w", err)
	}
	ours := map[string]SchemaItem{}
	for _, it := range tmpl {
		if it.Kind == "definition" {
			ours[it.Name] = it
		}
	}
	current, err := c.ReadSchema(ctx)
	if err != nil {
		return LegacyPlan{}, err
	}
	items, _, err := ParseSchema(current)
	if err != nil {
		return LegacyPlan{}, fmt.Errorf("%w: SpiceDB's schema could not be read: %w", ErrSchemaConflict, err)
	}
	plan := LegacyPlan{base: current}
	if !legacyFingerprint(items) {
		return plan, nil // no version before the prefix wrote this schema: the bare names are others'
	}
	gone := map[string]bool{}
	var kept []SchemaItem
	for _, it := range items {
		want, named := ours[it.Name]
		if it.Kind == "definition" && named && sameShape(it, want) {
			gone[it.Name] = true
			plan.Definitions = append(plan.Definitions, it.Name)
			continue
		}
		kept = append(kept, it)
	}
	if len(gone) == 0 {
		return plan, nil
	}
	var problems []string
	var b strings.Builder
	for _, it := range kept {
		for _, ref := range relationTypes(it.body()) {
			if gone[ref] {
				problems = append(problems, fmt.Sprintf("%s %s refers to %s", it.Kind, it.Name, ref))
			}
		}
		b.WriteString(it.Text)
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		plan.Conflict = fmt.Errorf("%w: %s; move them to the prefixed names (%s) first", ErrSchemaConflict,
			strings.Join(slices.Compact(problems), "; "), c.ns.Type("…"))
	}
	plan.schema = strings.TrimSpace(b.String()) + "\n"
	if gone[view.TypeProjector] {
		plan.NotRebuilt, err = c.notRebuilt(ctx)
		if err != nil {
			return LegacyPlan{}, err
		}
	}
	return plan, nil
}

// notRebuilt lists the projectors of the unprefixed view whose view under
// the client's prefix is not built: none under the prefix has a cursor, or
// (a rebuild that ended on a quiet stream stores none) a first run there
// has not finished its rebuild or holds fewer of the source's repos than
// the old view does.
func (c *Client) notRebuilt(ctx context.Context) ([]string, error) {
	legacy := *c
	legacy.ns = Namespace{}
	seen := map[string]bool{}
	var names []string
	err := legacy.Read(ctx, &v1.RelationshipFilter{ResourceType: view.TypeProjector}, "", func(t view.Tuple) error {
		if !seen[t.ResourceID] {
			seen[t.ResourceID] = true
			names = append(names, t.ResourceID)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range names {
		st, err := c.ReadProjector(ctx, name)
		if err != nil {
			return nil, err
		}
		if st.Progress.Cursor != checkpoint.None {
			continue
		}
		if st.Epoch != checkpoint.None && st.Progress.Rebuild == checkpoint.None {
			had, err := legacy.ownedRepos(ctx, name)
			if err != nil {
				return nil, err
			}
			has, err := c.ownedRepos(ctx, name)
			if err != nil {
				return nil, err
			}
			if has >= had {
				continue
			}
		}
		out = append(out, name)
	}
	return out, nil
}

// ownedRepos counts the repos a source owns (repo:<did>#source@projector:<source>).
func (c *Client) ownedRepos(ctx context.Context, source string) (int, error) {
	n := 0
	err := c.Read(ctx, &v1.RelationshipFilter{ResourceType: view.TypeRepo, OptionalRelation: view.RelSource,
		OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: view.TypeProjector, OptionalSubjectId: source}}, "",
		func(view.Tuple) error { n++; return nil })
	return n, err
}

// RemoveLegacy deletes every relationship of the plan's definitions, a
// thousand at a time, then writes the schema without them. It returns the
// number of relationships deleted.
func (c *Client) RemoveLegacy(ctx context.Context, plan LegacyPlan) (int64, error) {
	if plan.Conflict != nil {
		return 0, plan.Conflict
	}
	// Deleting is not undone by a failed schema write: check first that
	// the plan still describes SpiceDB's schema.
	if now, err := c.ReadSchema(ctx); err != nil {
		return 0, err
	} else if now != plan.base {
		return 0, fmt.Errorf("%w: SpiceDB's schema changed since it was read (another application wrote it): "+
			"nothing removed; plan again", ErrSchemaConflict)
	}
	var n int64
	for _, def := range plan.Definitions {
		for {
			cctx, cancel := c.callCtx(ctx)
			resp, err := c.api.DeleteRelationships(cctx, &v1.DeleteRelationshipsRequest{
				RelationshipFilter: &v1.RelationshipFilter{ResourceType: def}, OptionalLimit: 1000,
				OptionalAllowPartialDeletions: true})
			cancel()
			if err != nil {
				return n, wrapf(err, "delete the relationships of %s", def)
			}
			n += int64(resp.GetRelationshipsDeletedCount())
			if resp.GetDeletionProgress() != v1.DeleteRelationshipsResponse_DELETION_PROGRESS_PARTIAL {
				break
			}
		}
	}
	if err := c.WriteSchema(ctx, plan.schema); err != nil {
		return n, err
	}
	return n, nil
}

// legacyFingerprint reports whether a schema holds what only the project's
// versions before the prefix wrote: a bare projector whose holder is a
// consumer and a bare lineage produced by a record. Without it, bare
// definitions of the project's names (space, group, status, …) belong to
// another application.
func legacyFingerprint(items []SchemaItem) bool {
	want := map[string][2]string{view.TypeProjector: {view.RelHolder, view.TypeConsumer},
		view.TypeLineage: {view.RelProducedBy, view.TypeRecord}}
	found := 0
	for _, it := range items {
		if w, ok := want[it.Name]; ok && it.Kind == "definition" && slices.Equal(subjectTypes(it.body())[w[0]], []string{w[1]}) {
			found++
		}
	}
	return found == len(want)
}

// sameShape reports whether a definition SpiceDB holds is (a version of)
// the template's: it declares nothing the template does not, and each of
// its relations allows exactly the subject types the template's does.
func sameShape(held, tmpl SchemaItem) bool {
	if !subset(declared(held.body()), declared(tmpl.body())) {
		return false
	}
	want := subjectTypes(tmpl.body())
	for rel, types := range subjectTypes(held.body()) {
		w := slices.Clone(want[rel])
		types = slices.Clone(types)
		slices.Sort(w)
		slices.Sort(types)
		if !slices.Equal(slices.Compact(types), slices.Compact(w)) {
			return false
		}
	}
	return true
}

func subset(a, b map[string]bool) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

var relationTypesRe = regexp.MustCompile(`relation\s+[a-z][a-z0-9_]*\s*:([^\n]*)`)

// relationTypes lists the definition names a body's relations allow as
// subjects (`a`, `b#member`, `c:*` and `d with caveat` give a, b, c, d).
func relationTypes(body string) []string {
	var out []string
	for _, m := range relationTypesRe.FindAllStringSubmatch(blankComments(body), -1) {
		for _, alt := range strings.Split(m[1], "|") {
			f := strings.Fields(alt)
			if len(f) == 0 {
				continue
			}
			name, _, _ := strings.Cut(f[0], "#")
			name, _, _ = strings.Cut(name, ":")
			out = append(out, name)
		}
	}
	return out
}
