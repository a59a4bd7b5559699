package firehose

import (
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

var syntaxSeeds = []string{
	"com.atproto.space.space", "app.bsky.feed.post", "a.b.c", "a.b", "a-b.c.d", "a.b-.c", "a.-b.c",
	"a.b.c1", "a.b.1c", "1a.b.c", "a..b.c", ".a.b.c", "a.b.c.", "a.b.c-d", "com.example.fooBar",
	"a-.b.c", "-a.b.c", "a.b.-c", "a.b.c-", "a.b-c.d", "A.B.C", "a1.b.c", "a.b.c.d.e", "a.b.C9", "a.b._", "a.b.c:",
	"self", "3k2a.b~c", "a:b", ".", "..", "...", "-_~.:", "a/b", "a b", "é.b.c", "",
	"a.b.cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
	"a.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.c",
}

func checkSyntax(t *testing.T, s string) {
	_, nerr := syntax.ParseNSID(s)
	if got := validNSID(s); got != (nerr == nil) {
		t.Errorf("validNSID(%q) = %v, indigo says %v", s, got, nerr)
	}
	_, kerr := syntax.ParseRecordKey(s)
	if got := validRecordKey(s); got != (kerr == nil) {
		t.Errorf("validRecordKey(%q) = %v, indigo says %v", s, got, kerr)
	}
}

func TestSyntaxMatchesIndigo(t *testing.T) {
	for _, s := range syntaxSeeds {
		checkSyntax(t, s)
	}
}

func FuzzSyntaxMatchesIndigo(f *testing.F) {
	for _, s := range syntaxSeeds {
		f.Add(s)
	}
	f.Fuzz(checkSyntax)
}
