package spice

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
)

// QualifySchema writes a schema template in the view's names (such as
// deploy/spicedb/schema.zed) under a namespace: every definition it
// declares is renamed <prefix>/<name>, and so is every reference to one in a
// relation's allowed types; caveats too, and the relations' `with <caveat>`.
// Comments are left as they are.
func QualifySchema(template string, ns Namespace) (string, error) {
	items, tail, err := ParseSchema(template)
	if err != nil {
		return "", err
	}
	if ns.prefix == "" {
		return template, nil
	}
	defined := map[string]bool{} // definitions and caveats
	for _, it := range items {
		if it.Kind == "definition" || it.Kind == "caveat" {
			defined[it.Name] = true
		}
	}
	var b strings.Builder
	for _, it := range items {
		if it.Kind == "use" {
			b.WriteString(it.Text)
			continue
		}
		b.WriteString(qualifyItem(it.Text, defined, ns))
	}
	b.WriteString(tail)
	return b.String(), nil
}

var (
	headerRe   = regexp.MustCompile(`\b(?:definition|caveat)\s+([a-z][a-z0-9_]*)`)
	relStartRe = regexp.MustCompile(`\brelation\s+[a-z][a-z0-9_]*\s*:`)
	relEndRe   = regexp.MustCompile(`\b(?:relation|permission)\b|\}`)
	tokenRe    = regexp.MustCompile(`[a-z][a-z0-9_]*(?:/[a-z][a-z0-9_]*)*`)
)

// qualifyItem renames, in one definition's or caveat's text, its own name
// and every type (or caveat) of its relations that the template defines.
// Positions are found in a copy with comments and strings blanked out, so
// that neither is touched, wherever the statements break their lines.
func qualifyItem(text string, defined map[string]bool, ns Namespace) string {
	m := blankComments(text)
	var at []int
	if loc := headerRe.FindStringSubmatchIndex(m); loc != nil && defined[m[loc[2]:loc[3]]] {
		at = append(at, loc[2])
	}
	for _, loc := range relStartRe.FindAllStringIndex(m, -1) {
		end := len(m)
		if e := relEndRe.FindStringIndex(m[loc[1]:]); e != nil {
			end = loc[1] + e[0]
		}
		span := m[loc[1]:end]
		for _, t := range tokenRe.FindAllStringIndex(span, -1) {
			if !defined[span[t[0]:t[1]]] || t[0] > 0 && span[t[0]-1] == '#' {
				continue // "with", "expiration", another application's type, a relation
			}
			at = append(at, loc[1]+t[0])
		}
	}
	slices.Sort(at)
	var b strings.Builder
	prev := 0
	for _, i := range at {
		b.WriteString(text[prev:i])
		b.WriteString(ns.prefix + "/")
		prev = i
	}
	b.WriteString(text[prev:])
	return b.String()
}

// A SchemaChange is what applying the project's schema changes in one
// definition (or caveat) under its namespace.
type SchemaChange struct {
	Kind string // "add", "change" or "remove"
	Name string
	// Old and New are the definition's texts before and after ("" when
	// added or removed), as SpiceDB shows them and as the schema file
	// writes them.
	Old, New string
}

// SchemaPlan is the merge of the project's schema into the schema a
// SpiceDB holds: every definition under the namespace (and, unprefixed,
// every definition of the project's names) is replaced by the project's;
// every other item is kept byte for byte.
type SchemaPlan struct {
	// Schema is the merged text to write.
	Schema string
	// Changes lists what differs under the namespace; none means that
	// applying is a no-op.
	Changes []SchemaChange
	// Kept names the other applications' items that are kept.
	Kept []string
	// base is the schema the plan merged into (SpiceDB's, when read).
	base string
}

// ErrSchemaConflict is returned when the project's schema cannot be merged
// without breaking another application's definitions.
var ErrSchemaConflict = errors.New("schema conflict")

// PlanSchema merges ours (the project's schema, already qualified) into
// current (what SpiceDB holds; "" for none). It fails with
// ErrSchemaConflict when a kept item refers to a definition or relation
// under the namespace that the merge would remove, or when current cannot
// be parsed.
func PlanSchema(current, ours string, ns Namespace) (SchemaPlan, error) {
	cur, _, err := ParseSchema(current)
	if err != nil {
		return SchemaPlan{}, fmt.Errorf("%w: SpiceDB's current schema could not be read (%w): "+
			"refusing to rewrite what it cannot parse", ErrSchemaConflict, err)
	}
	mine, _, err := ParseSchema(ours)
	if err != nil {
		return SchemaPlan{}, fmt.Errorf("the project's schema: %w", err)
	}
	ourNames := map[string]SchemaItem{}
	for _, it := range mine {
		ourNames[it.Kind+" "+it.Name] = it
	}
	isOurs := func(it SchemaItem) bool {
		if it.Kind == "use" {
			return false
		}
		_, named := ourNames[it.Kind+" "+it.Name]
		return named || ns.Owns(it.Name)
	}
	plan := SchemaPlan{base: current}
	var kept []string
	seen := map[string]bool{}
	for _, it := range cur {
		if !isOurs(it) {
			kept = append(kept, it.Text)
			plan.Kept = append(plan.Kept, strings.TrimSpace(it.Kind+" "+it.Name))
			continue
		}
		seen[it.Kind+" "+it.Name] = true
		if nw, ok := ourNames[it.Kind+" "+it.Name]; !ok {
			plan.Changes = append(plan.Changes, SchemaChange{Kind: "remove", Name: it.Name, Old: strings.TrimSpace(it.body())})
		} else if it.normalized() != nw.normalized() {
			plan.Changes = append(plan.Changes, SchemaChange{Kind: "change", Name: it.Name,
				Old: strings.TrimSpace(it.body()), New: strings.TrimSpace(nw.body())})
		}
	}
	for _, it := range mine {
		if it.Kind != "use" && !seen[it.Kind+" "+it.Name] {
			plan.Changes = append(plan.Changes, SchemaChange{Kind: "add", Name: it.Name, New: strings.TrimSpace(it.body())})
		}
	}
	var held []SchemaItem // our definitions as SpiceDB holds them
	for _, it := range cur {
		if it.Kind == "definition" && isOurs(it) {
			held = append(held, it)
		}
	}
	if err := checkReferences(kept, mine, held, ns); err != nil {
		return SchemaPlan{}, err
	}
	var b strings.Builder
	for _, k := range kept {
		b.WriteString(k)
	}
	// Directives the project's schema needs but the current one lacks go
	// first: SpiceDB wants them before any definition.
	var ourUse, ourDefs strings.Builder
	for _, it := range mine {
		if it.Kind == "use" {
			if !slices.ContainsFunc(cur, func(c SchemaItem) bool { return c.Kind == "use" && c.Name == it.Name }) {
				ourUse.WriteString(strings.TrimSpace(it.Text) + "\n")
			}
			continue
		}
		ourDefs.WriteString(it.Text)
	}
	merged := ourUse.String() + strings.TrimRight(b.String(), " \t\n")
	if merged != "" {
		merged += "\n\n"
	}
	plan.Schema = merged + strings.TrimLeft(ourDefs.String(), "\n") + "\n"
	return plan, nil
}

// checkReferences fails when a kept item refers to a definition under the
// namespace that ours does not define, or to a relation or permission that
// ours does not declare on it, in a type (`group#member`) or through an
// arrow (`rel->view`, `rel.any(view)`, rel allowing one of ours) that
// reaches a relation or permission held declares and ours drops. SpiceDB
// accepts the latter: the other application's permission just stops
// granting.
func checkReferences(kept []string, ours, held []SchemaItem, ns Namespace) error {
	if ns.prefix == "" {
		return nil // SpiceDB itself refuses a schema that refers to a missing definition
	}
	members := map[string]map[string]bool{}
	for _, it := range ours {
		if it.Kind == "definition" || it.Kind == "caveat" { // a relation may name a caveat of ours: `with <prefix>/c`
			members[it.Name] = declared(it.body())
		}
	}
	before := map[string]map[string]bool{}
	for _, it := range held {
		before[it.Name] = declared(it.body())
	}
	var problems []string
	for _, text := range kept {
		it := SchemaItem{Text: text}
		items, _, _ := ParseSchema(text)
		if len(items) == 1 {
			it = items[0]
		}
		for _, ref := range prefixedRefs(text, ns) {
			name, rel, _ := strings.Cut(ref, "#")
			m, ok := members[name]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s %s refers to %s, which this version does not define", it.Kind, it.Name, name))
			case rel != "" && !m[rel]:
				problems = append(problems, fmt.Sprintf("%s %s refers to %s#%s, which this version does not declare", it.Kind, it.Name, name, rel))
			}
		}
		if it.Kind != "definition" {
			continue
		}
		types := subjectTypes(it.body())
		for _, a := range arrowRe.FindAllStringSubmatch(normalize(it.body()), -1) {
			via, target := a[1], a[2]
			for _, typ := range types[via] {
				if m, ok := members[typ]; ok && before[typ][target] && !m[target] {
					problems = append(problems, fmt.Sprintf("%s %s refers to %s#%s through %s, which this version does not declare",
						it.Kind, it.Name, typ, target, strings.TrimSuffix(a[0], "(")))
				}
			}
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		problems = slices.Compact(problems)
		return fmt.Errorf("%w: applying would break another application's definitions: %s; "+
			"change them first, or deploy a version that still has what they use", ErrSchemaConflict, strings.Join(problems, "; "))
	}
	return nil
}

var memberRe = regexp.MustCompile(`(relation|permission)\s+([a-z][a-z0-9_]*)`)

// arrowRe finds the arrows of a normalized definition: rel->target,
// rel.any(target), rel.all(target).
var arrowRe = regexp.MustCompile(`\b([a-z][a-z0-9_]*)(?:->|\.any\(|\.all\()([a-z][a-z0-9_]*)`)

// declared are the relation and permission names of a definition body,
// comments left out.
func declared(body string) map[string]bool {
	m := map[string]bool{}
	for _, sm := range memberRe.FindAllStringSubmatch(blankComments(body), -1) {
		m[sm[2]] = true
	}
	return m
}

// subjectTypes maps each relation of a definition body to the definitions
// it allows as subjects.
func subjectTypes(body string) map[string][]string {
	out := map[string][]string{}
	for _, m := range relationDeclRe.FindAllStringSubmatch(blankComments(body), -1) {
		out[m[1]] = relationTypes("relation " + m[1] + ":" + m[2])
	}
	return out
}

var relationDeclRe = regexp.MustCompile(`relation\s+([a-z][a-z0-9_]*)\s*:([^\n]*)`)

// PlanApply reads SpiceDB's schema and plans the merge of template (the
// project's schema in the view's names, such as deploy.Schema) under the
// client's namespace.
func (c *Client) PlanApply(ctx context.Context, template string) (SchemaPlan, error) {
	ours, err := QualifySchema(template, c.ns)
	if err != nil {
		return SchemaPlan{}, fmt.Errorf("spice: the project's schema: %w", err)
	}
	current, err := c.ReadSchema(ctx)
	if err != nil {
		return SchemaPlan{}, err
	}
	plan, err := PlanSchema(current, ours, c.ns)
	if err != nil || len(plan.Changes) == 0 {
		return plan, err
	}
	// SpiceDB stores a permission in its own form (`a - b - c` as
	// `(a - b) - c`, `(a + b)` as `a + b`), which normalize does not undo:
	// ask SpiceDB whether the merged schema differs from what it holds.
	// When it cannot say (an older SpiceDB), the plan stands.
	if same, err := c.sameSchema(ctx, plan.Schema); err == nil && same {
		plan.Changes = nil
	}
	return plan, nil
}

// sameSchema reports whether SpiceDB finds no difference between schema and
// the one it holds.
func (c *Client) sameSchema(ctx context.Context, schema string) (bool, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.api.DiffSchema(ctx, &v1.DiffSchemaRequest{Consistency: Consistency(""), ComparisonSchema: schema})
	if err != nil {
		return false, err
	}
	return len(resp.GetDiffs()) == 0, nil
}

// ApplySchema merges template into SpiceDB's schema (PlanApply) and writes
// it unless nothing under the namespace changes. It returns the plan.
func (c *Client) ApplySchema(ctx context.Context, template string) (SchemaPlan, error) {
	plan, err := c.PlanApply(ctx, template)
	if err != nil {
		return plan, err
	}
	if len(plan.Changes) == 0 {
		return plan, nil
	}
	return plan, c.WritePlan(ctx, plan)
}

// WritePlan writes the plan's schema unless SpiceDB's schema is no longer
// the one the plan merged into: another application's WriteSchema between
// the read and the write would otherwise be undone (a lost update). The v1
// API has no precondition on WriteSchema, so a write that lands between
// this re-read and the write is still lost; the window is only narrowed.
func (c *Client) WritePlan(ctx context.Context, plan SchemaPlan) error {
	now, err := c.ReadSchema(ctx)
	if err != nil {
		return err
	}
	if now != plan.base {
		return fmt.Errorf("%w: SpiceDB's schema changed since it was read (another application wrote it): "+
			"nothing written; plan again", ErrSchemaConflict)
	}
	return c.WriteSchema(ctx, plan.Schema)
}

// Diff renders the plan's changes for a person: one block per definition
// added (+), removed (-) or changed (~, with its statements' line diff),
// comments and layout left out. It is "" when nothing changes.
func (p SchemaPlan) Diff() string {
	var b strings.Builder
	for _, c := range p.Changes {
		switch c.Kind {
		case "add":
			fmt.Fprintf(&b, "+ %s (new)\n", c.Name)
			for _, l := range statements(c.New) {
				fmt.Fprintf(&b, "    + %s\n", l)
			}
		case "remove":
			fmt.Fprintf(&b, "- %s (removed)\n", c.Name)
			for _, l := range statements(c.Old) {
				fmt.Fprintf(&b, "    - %s\n", l)
			}
		case "change":
			fmt.Fprintf(&b, "~ %s\n", c.Name)
			for _, l := range lineDiff(statements(c.Old), statements(c.New)) {
				fmt.Fprintf(&b, "    %s\n", l)
			}
		}
	}
	return b.String()
}

// statements are a definition's lines with comments dropped and white
// space collapsed, empty ones left out, spaced out the way a person writes
// them.
func statements(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		n := normalize(l)
		if n == "" {
			continue
		}
		n = strings.ReplaceAll(n, ":*", "\x00") // acct:* is one token
		n = readable.Replace(n)
		out = append(out, strings.TrimSpace(strings.ReplaceAll(n, "\x00", ":*")))
	}
	return out
}

var readable = strings.NewReplacer("{", " {", ":", ": ", "|", " | ", "=", " = ", "+", " + ", "&", " & ")

// lineDiff is a longest-common-subsequence diff of two short lists of
// lines: "  " kept, "- " removed, "+ " added.
func lineDiff(a, b []string) []string {
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			out = append(out, "  "+a[i])
			i, j = i+1, j+1
		case lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, "- "+a[i])
			i++
		default:
			out = append(out, "+ "+b[j])
			j++
		}
	}
	for ; i < len(a); i++ {
		out = append(out, "- "+a[i])
	}
	for ; j < len(b); j++ {
		out = append(out, "+ "+b[j])
	}
	return out
}
