package view

import (
	"errors"
	"strings"
	"testing"
)

const (
	alice  = "did:plc:alice"
	bob    = "did:plc:bob"
	spaceC = "com.atproto.space.space"
	groupC = "com.atproto.space.group"
	relC   = "com.atproto.space.relation"
)

func rel(resType, res, perm, subType, sub, subRel string) map[string]any {
	m := map[string]any{"$type": relC, "resourceType": resType, "resource": res, "permission": perm,
		"subjectType": subType, "subject": sub}
	if subRel != "" {
		m["subjectRelation"] = subRel
	}
	return m
}

func TestProjectTable(t *testing.T) {
	r := DefaultRules()
	cases := []struct {
		name       string
		did, coll  string
		rkey       string
		value      map[string]any
		want       []string
		wantReason Reason
	}{
		{name: "space", did: alice, coll: spaceC, rkey: "paid", value: map[string]any{"displayName": "Paid", "bubble": false},
			want: []string{"space:did|plc|alice/paid#owner@acct:did|plc|alice", "space:did|plc|alice/paid#inherits@acct:*"}},
		{name: "space without bubble field", did: alice, coll: spaceC, rkey: "root", value: map[string]any{},
			want: []string{"space:did|plc|alice/root#owner@acct:did|plc|alice", "space:did|plc|alice/root#inherits@acct:*"}},
		{name: "bubble", did: alice, coll: spaceC, rkey: "b", value: map[string]any{"bubble": true},
			want: []string{"space:did|plc|alice/b#owner@acct:did|plc|alice"}},
		{name: "bubble not bool", did: alice, coll: spaceC, rkey: "b", value: map[string]any{"bubble": "yes"}, wantReason: ReasonInvalidField},
		{name: "group", did: alice, coll: groupC, rkey: "subs", value: map[string]any{"displayName": "Subs"},
			want: []string{"group:did|plc|alice/subs#owner@acct:did|plc|alice"}},
		{name: "other collection", did: alice, coll: "app.bsky.feed.post", rkey: "x", value: map[string]any{"text": "hi"}},
		{name: "parent", did: alice, coll: relC, rkey: "r1", value: rel("space", alice+"/paid", "parent", "space", alice+"/root", ""),
			want: []string{"space:did|plc|alice/paid#parent@space:did|plc|alice/root"}},
		{name: "group viewer", did: alice, coll: relC, rkey: "r2", value: rel("space", alice+"/paid", "viewer", "group", bob+"/subs", "member"),
			want: []string{"space:did|plc|alice/paid#viewer@group:did|plc|bob/subs#member"}},
		{name: "group member", did: alice, coll: relC, rkey: "r3", value: rel("group", alice+"/subs", "direct_member", "acct", bob, ""),
			want: []string{"group:did|plc|alice/subs#direct_member@acct:did|plc|bob"}},
		{name: "public viewer", did: alice, coll: relC, rkey: "r4", value: rel("space", alice+"/pub", "viewer", "acct", "*", ""),
			want: []string{"space:did|plc|alice/pub#viewer@acct:*"}},
		{name: "editor acct", did: alice, coll: relC, rkey: "r5", value: rel("space", alice+"/pub", "editor", "acct", bob, ""),
			want: []string{"space:did|plc|alice/pub#editor@acct:did|plc|bob"}},
		// Security rules.
		{name: "foreign resource", did: bob, coll: relC, rkey: "h", value: rel("space", alice+"/paid", "admin", "acct", bob, ""), wantReason: ReasonForeignResource},
		{name: "did:web look-alike", did: "did:web:example.com", coll: relC, rkey: "h",
			value: rel("space", "did:web:example.com.au/root", "viewer", "acct", "did:web:example.com", ""), wantReason: ReasonForeignResource},
		{name: "foreign parent", did: alice, coll: relC, rkey: "h", value: rel("space", alice+"/paid", "parent", "space", bob+"/root", ""), wantReason: ReasonForeignParent},
		{name: "owner from relation", did: alice, coll: relC, rkey: "h", value: rel("space", alice+"/paid", "owner", "acct", bob, ""), wantReason: ReasonRelationNotAllowed},
		{name: "inherits from relation", did: alice, coll: relC, rkey: "h", value: rel("space", alice+"/paid", "inherits", "acct", "*", ""), wantReason: ReasonRelationNotAllowed},
		{name: "bookkeeping type", did: alice, coll: relC, rkey: "h", value: rel("lineage", alice+"/x", "produced_by", "acct", bob, ""), wantReason: ReasonRelationNotAllowed},
		{name: "projector type", did: alice, coll: relC, rkey: "h", value: rel("projector", alice+"/x", "holder", "acct", bob, ""), wantReason: ReasonRelationNotAllowed},
		{name: "wildcard editor", did: alice, coll: relC, rkey: "h", value: rel("space", alice+"/paid", "editor", "acct", "*", ""), wantReason: ReasonWildcardNotAllowed},
		{name: "nested group", did: alice, coll: relC, rkey: "h", value: rel("group", alice+"/subs", "direct_member", "group", bob+"/g", "member"), wantReason: ReasonSubjectNotAllowed},
		{name: "group without member", did: alice, coll: relC, rkey: "h", value: rel("space", alice+"/paid", "viewer", "group", bob+"/g", ""), wantReason: ReasonSubjectNotAllowed},
		{name: "space subject on viewer", did: alice, coll: relC, rkey: "h", value: rel("space", alice+"/paid", "viewer", "space", alice+"/root", ""), wantReason: ReasonSubjectNotAllowed},
		{name: "acct with subject relation", did: alice, coll: relC, rkey: "h", value: rel("space", alice+"/paid", "viewer", "acct", bob, "member"), wantReason: ReasonSubjectNotAllowed},
		{name: "unknown subject type", did: alice, coll: relC, rkey: "h", value: rel("space", alice+"/paid", "viewer", "user", bob, ""), wantReason: ReasonSubjectNotAllowed},
		{name: "missing field", did: alice, coll: relC, rkey: "h", value: map[string]any{"resourceType": "space"}, wantReason: ReasonMissingField},
		{name: "mistyped field", did: alice, coll: relC, rkey: "h", value: map[string]any{"resourceType": "space", "resource": 7,
			"permission": "viewer", "subjectType": "acct", "subject": bob}, wantReason: ReasonInvalidField},
		{name: "bad subject did", did: alice, coll: relC, rkey: "h", value: rel("space", alice+"/paid", "viewer", "acct", "bob", ""), wantReason: ReasonInvalidField},
		{name: "bad resource", did: alice, coll: relC, rkey: "h", value: rel("space", "paid", "viewer", "acct", bob, ""), wantReason: ReasonInvalidField},
		{name: "resource with two slashes", did: alice, coll: relC, rkey: "h", value: rel("space", alice+"/a/b", "viewer", "acct", bob, ""), wantReason: ReasonInvalidField},
		{name: "bad rkey", did: alice, coll: spaceC, rkey: "..", value: map[string]any{}, wantReason: ReasonInvalidRecordKey},
		{name: "id too long", did: "did:web:" + strings.Repeat("a", 1000) + ".com", coll: relC, rkey: "h",
			value: rel("space", "did:web:"+strings.Repeat("a", 1000)+".com/x", "viewer", "acct", bob, ""), wantReason: ReasonIDTooLong},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := r.Project(c.did, c.coll, c.rkey, c.value)
			if c.wantReason != "" {
				var rj *Rejection
				if !errors.As(err, &rj) || rj.Reason != c.wantReason {
					t.Fatalf("err = %v, want reason %s", err, c.wantReason)
				}
				if got != nil {
					t.Fatalf("a rejected record produced %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, tu := range got {
				s = append(s, tu.String())
			}
			if strings.Join(s, ",") != strings.Join(c.want, ",") {
				t.Fatalf("got %v\nwant %v", s, c.want)
			}
		})
	}
}

func TestRulesValidation(t *testing.T) {
	base := string(DefaultRulesYAML())
	bad := map[string]string{
		"wildcard on editor": strings.Replace(base, "editor: [acct, group#member]", `editor: [acct, "acct:*"]`, 1),
		"owner granted":      strings.Replace(base, "editor: [acct, group#member]", "owner: [acct]", 1),
		"space subject":      strings.Replace(base, "editor: [acct, group#member]", "editor: [space]", 1),
		"nested group":       strings.Replace(base, "direct_member: [acct]\n", "direct_member: [group#member]\n", 1),
		"bad nsid":           strings.Replace(base, "collection: com.atproto.space.group", "collection: nope", 1),
		"same collection":    strings.Replace(base, "collection: com.atproto.space.group", "collection: com.atproto.space.space", 1),
		"unknown key":        base + "\nextra: 1\n",
		"lineage resource":   strings.Replace(base, "    group:\n      direct_member", "    lineage:\n      direct_member", 1),
	}
	for name, y := range bad {
		if y == base {
			t.Fatalf("%s: replacement did not apply", name)
		}
		if _, err := ParseRules([]byte(y)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	custom := strings.ReplaceAll(base, "com.atproto.space.", "org.example.spaces.")
	r, err := ParseRules([]byte(custom))
	if err != nil {
		t.Fatal(err)
	}
	if !r.MatchPath("org.example.spaces.relation/x") || r.MatchPath("com.atproto.space.relation/x") {
		t.Fatal("custom collections not applied")
	}
}

// FuzzProject feeds arbitrary field values through the mapping: it must
// never panic, and anything it accepts must satisfy the security rules and
// SpiceDB's ID pattern.
func FuzzProject(f *testing.F) {
	f.Add(alice, "space", alice+"/paid", "viewer", "acct", "*", "")
	f.Add(alice, "space", alice+"/paid", "parent", "space", alice+"/root", "")
	f.Add(bob, "space", alice+"/paid", "admin", "acct", bob, "")
	f.Add("did:web:example.com", "group", "did:web:example.com.au/g", "direct_member", "acct", alice, "")
	r := DefaultRules()
	f.Fuzz(func(t *testing.T, did, resType, res, perm, subType, sub, subRel string) {
		got, err := r.Project(did, relC, "k", rel(resType, res, perm, subType, sub, subRel))
		if err != nil {
			var rj *Rejection
			if !errors.As(err, &rj) {
				t.Fatalf("non-rejection error %v", err)
			}
			return
		}
		for _, tu := range got {
			if !tu.Valid() || len(LineageID(tu)) > MaxObjectIDLen {
				t.Fatalf("invalid tuple %v", tu)
			}
			if !strings.HasPrefix(tu.ResourceID, DIDPrefix(did)) {
				t.Fatalf("tuple %v escapes repo %s", tu, did)
			}
			if tu.Relation == RelOwner || tu.Relation == RelInherits {
				t.Fatalf("relation record produced %v", tu)
			}
			if tu.SubjectID == Wildcard && tu.Relation != "viewer" {
				t.Fatalf("wildcard on %v", tu)
			}
			if tu.Relation == RelParent && !strings.HasPrefix(tu.SubjectID, DIDPrefix(did)) {
				t.Fatalf("foreign parent %v", tu)
			}
		}
	})
}
