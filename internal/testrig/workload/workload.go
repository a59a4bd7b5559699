// Package workload generates randomized, reproducible record workloads for
// the crash and e2e tests: creates, updates and deletes of spaces, groups
// and relations across several accounts, with some invalid and hostile
// records, bubble flips, parent moves, and account status changes.
package workload

import (
	"fmt"
	"math/rand/v2"
	"sort"

	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
)

// Collections of the default rules.
const (
	SpaceC    = "com.atproto.space.space"
	GroupC    = "com.atproto.space.group"
	RelationC = "com.atproto.space.relation"
	OtherC    = "com.example.feed.post" // an unknown lexicon: any record key is accepted
)

// Kind of a step.
type Kind int

// Step kinds.
const (
	KindCommit Kind = iota // Writes to Account's repo, one commit
	KindSilent             // Writes applied without a stream event (a gap; fake PDS only)
	KindStatus             // Account status change: Active, Status
	KindSync               // a #sync of Account (fake PDS only)
)

// Step is one action of a workload.
type Step struct {
	Kind    Kind
	Account int
	Writes  []fakepds.Write
	Active  bool
	Status  string
}

// Options shape a workload.
type Options struct {
	Accounts int
	// Steps to generate.
	Steps int
	// MaxOps per commit (default 4).
	MaxOps int
	// Gaps and Syncs allow KindSilent and KindSync steps.
	Gaps, Syncs bool
	// StatusChanges allows KindStatus steps (deactivate, then reactivate).
	StatusChanges bool
}

// Generator produces steps, tracking each repo's records so that updates and
// deletes name records that exist.
type Generator struct {
	rng      *rand.Rand
	dids     []string
	opt      Options
	records  []map[string]bool // per account: paths that exist
	inactive []bool
	seq      int
}

// New makes a generator over the given account DIDs with a seed.
func New(seed uint64, dids []string, opt Options) *Generator {
	if opt.MaxOps <= 0 {
		opt.MaxOps = 4
	}
	g := &Generator{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), dids: dids, opt: opt}
	for range dids {
		g.records = append(g.records, map[string]bool{})
		g.inactive = append(g.inactive, false)
	}
	return g
}

// Next returns the next step.
func (g *Generator) Next() Step {
	a := g.rng.IntN(len(g.dids))
	r := g.rng.IntN(100)
	switch {
	case g.opt.StatusChanges && r < 3:
		g.inactive[a] = !g.inactive[a]
		if g.inactive[a] {
			st := "deactivated"
			if g.rng.IntN(2) == 0 {
				st = "takendown"
			}
			return Step{Kind: KindStatus, Account: a, Active: false, Status: st}
		}
		return Step{Kind: KindStatus, Account: a, Active: true}
	case g.opt.Syncs && r < 5 && !g.inactive[a]:
		return Step{Kind: KindSync, Account: a}
	}
	for g.inactive[a] {
		a = (a + 1) % len(g.dids)
		if allInactive(g.inactive) {
			g.inactive[a] = false
			return Step{Kind: KindStatus, Account: a, Active: true}
		}
	}
	kind := KindCommit
	if g.opt.Gaps && r >= 97 {
		kind = KindSilent
	}
	n := 1 + g.rng.IntN(g.opt.MaxOps)
	var ws []fakepds.Write
	used := map[string]bool{}
	for range n {
		w := g.write(a)
		if used[w.Path()] {
			continue
		}
		used[w.Path()] = true
		ws = append(ws, w)
	}
	return Step{Kind: kind, Account: a, Writes: ws}
}

// LastWrites returns, for every active account, one more commit that ends
// the workload in a state the stream has carried (no trailing gap).
func (g *Generator) LastWrites() []Step {
	var out []Step
	for a := range g.dids {
		if g.inactive[a] {
			g.inactive[a] = false
			out = append(out, Step{Kind: KindStatus, Account: a, Active: true})
		}
		out = append(out, Step{Kind: KindCommit, Account: a, Writes: []fakepds.Write{g.create(a, OtherC, g.key("end"), post())}})
	}
	return out
}

func allInactive(in []bool) bool {
	for _, x := range in {
		if !x {
			return false
		}
	}
	return true
}

func (g *Generator) key(prefix string) string {
	g.seq++
	return fmt.Sprintf("%s%d", prefix, g.seq)
}

func (g *Generator) existing(a int, coll string) []string {
	var out []string
	for p := range g.records[a] {
		if len(p) > len(coll) && p[:len(coll)] == coll && p[len(coll)] == '/' {
			out = append(out, p[len(coll)+1:])
		}
	}
	sort.Strings(out)
	return out
}

func (g *Generator) pick(list []string) string { return list[g.rng.IntN(len(list))] }

func (g *Generator) create(a int, coll, rkey string, v map[string]any) fakepds.Write {
	g.records[a][coll+"/"+rkey] = true
	return fakepds.Write{Action: "create", Collection: coll, RKey: rkey, Value: v}
}

func (g *Generator) write(a int) fakepds.Write {
	did := g.dids[a]
	spaces, groups, rels := g.existing(a, SpaceC), g.existing(a, GroupC), g.existing(a, RelationC)
	r := g.rng.IntN(100)
	switch {
	case r < 15 || len(spaces) == 0:
		return g.create(a, SpaceC, g.key("s"), space(g.rng.IntN(4) == 0))
	case r < 22:
		return fakepds.Write{Action: "update", Collection: SpaceC, RKey: g.pick(spaces), Value: space(g.rng.IntN(2) == 0)}
	case r < 26:
		return g.del(a, SpaceC, g.pick(spaces))
	case r < 32 || len(groups) == 0:
		return g.create(a, GroupC, g.key("g"), map[string]any{"$type": GroupC, "displayName": "group"})
	case r < 34:
		return g.del(a, GroupC, g.pick(groups))
	case r < 40:
		return g.create(a, OtherC, g.key("p"), post())
	case r < 78 || len(rels) == 0:
		return g.create(a, RelationC, g.key("r"), g.relation(did, a, spaces, groups))
	case r < 90:
		return fakepds.Write{Action: "update", Collection: RelationC, RKey: g.pick(rels), Value: g.relation(did, a, spaces, groups)}
	default:
		return g.del(a, RelationC, g.pick(rels))
	}
}

func (g *Generator) del(a int, coll, rkey string) fakepds.Write {
	delete(g.records[a], coll+"/"+rkey)
	return fakepds.Write{Action: "delete", Collection: coll, RKey: rkey}
}

func space(bubble bool) map[string]any {
	return map[string]any{"$type": SpaceC, "displayName": "space", "bubble": bubble}
}

func post() map[string]any {
	return map[string]any{"$type": OtherC, "text": "hello", "createdAt": "2026-01-01T00:00:00Z"}
}

// relation makes a grant: mostly valid, sometimes invalid or hostile.
func (g *Generator) relation(did string, a int, spaces, groups []string) map[string]any {
	other := g.dids[g.rng.IntN(len(g.dids))]
	otherA := g.rng.IntN(len(g.dids))
	rel := func(rt, res, perm, st, sub, sr string) map[string]any {
		m := map[string]any{"$type": RelationC, "resourceType": rt, "resource": res, "permission": perm,
			"subjectType": st, "subject": sub}
		if sr != "" {
			m["subjectRelation"] = sr
		}
		return m
	}
	sp := did + "/" + g.pickOr(spaces, "ghost")
	switch r := g.rng.IntN(100); {
	case r < 25:
		return rel("space", sp, []string{"viewer", "editor", "admin", "direct_member"}[g.rng.IntN(4)], "acct", other, "")
	case r < 40:
		return rel("space", sp, "parent", "space", did+"/"+g.pickOr(spaces, "ghost"), "")
	case r < 55:
		og := g.existing(otherA, GroupC)
		return rel("space", sp, "viewer", "group", g.dids[otherA]+"/"+g.pickOr(og, "nogroup"), "member")
	case r < 70:
		return rel("group", did+"/"+g.pickOr(groups, "nogroup"), "direct_member", "acct", other, "")
	case r < 76:
		return rel("space", sp, "viewer", "acct", "*", "")
	case r < 82: // hostile: a grant on another repo's space
		return rel("space", other+"/"+g.pickOr(g.existing(otherA, SpaceC), "x"), "admin", "acct", did, "")
	case r < 87: // invalid: wildcard editor
		return rel("space", sp, "editor", "acct", "*", "")
	case r < 92: // invalid: owner from a relation
		return rel("space", sp, "owner", "acct", other, "")
	case r < 96: // malformed: missing subject
		return map[string]any{"$type": RelationC, "resourceType": "space", "resource": sp, "permission": "viewer"}
	default: // foreign parent
		return rel("space", sp, "parent", "space", other+"/x", "")
	}
}

func (g *Generator) pickOr(list []string, def string) string {
	if len(list) == 0 {
		return def
	}
	return g.pick(list)
}
