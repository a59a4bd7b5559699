package view

import (
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

func TestEncodeExamples(t *testing.T) {
	for in, want := range map[string]string{
		"did:plc:alice":                    "did|plc|alice",
		"did:web:example.com":              "did|web|example+com",
		"did:web:example.com%3A8080":       "did|web|example+com=3A8080",
		"did:plc:z72i7hdynmk6r22z27h6tvur": "did|plc|z72i7hdynmk6r22z27h6tvur",
	} {
		if got := EncodeDID(in); got != want {
			t.Errorf("EncodeDID(%q) = %q, want %q", in, got, want)
		}
		back, err := DecodeDID(want)
		if err != nil || back != in {
			t.Errorf("DecodeDID(%q) = %q, %v", want, back, err)
		}
	}
	if got := EncodeRecordKey("3k2a.b~c"); got != "3k2a+b=c" {
		t.Errorf("EncodeRecordKey = %q", got)
	}
	if got := EncodeNSID("com.atproto.space.space"); got != "com+atproto+space+space" {
		t.Errorf("EncodeNSID = %q", got)
	}
	if got := ObjectID("did:plc:alice", "paid"); got != "did|plc|alice/paid" {
		t.Errorf("ObjectID = %q", got)
	}
	for _, bad := range []string{"did:plc:x", "did|plc|x/y", "", "nope", "did|plc|"} {
		if _, err := DecodeDID(bad); err == nil {
			t.Errorf("DecodeDID(%q) accepted", bad)
		}
	}
}

func TestPrefixIsSlashTerminated(t *testing.T) {
	a, b := DIDPrefix("did:web:example.com"), ObjectID("did:web:example.com.au", "root")
	if strings.HasPrefix(b, a) {
		t.Fatalf("prefix %q matches look-alike %q", a, b)
	}
}

func TestLineageIDRoundTrip(t *testing.T) {
	for _, tu := range []Tuple{
		{TypeSpace, "did|plc|a/s", "viewer", TypeAcct, Wildcard, ""},
		{TypeSpace, "did|plc|a/s", "parent", TypeSpace, "did|plc|a/root", ""},
		{TypeSpace, "did|plc|a/s", "viewer", TypeGroup, "did|web|b+com/subs", RelMember},
		{TypeGroup, "did|plc|a/g", "direct_member", TypeAcct, "did|plc|bob", ""},
	} {
		id := LineageID(tu)
		if !ValidObjectID(id) {
			t.Fatalf("lineage id %q is not a valid object id", id)
		}
		back, err := ParseLineageID(id)
		if err != nil || back != tu {
			t.Fatalf("ParseLineageID(%q) = %+v, %v; want %+v", id, back, err, tu)
		}
	}
}

func TestStatusID(t *testing.T) {
	st := StatusTuple("did:plc:a", "deactivated", 42)
	s, seq, err := ParseStatusID(st.SubjectID)
	if err != nil || s != "deactivated" || seq != 42 || !st.Valid() {
		t.Fatalf("%v %q %d %v", st, s, seq, err)
	}
}

// FuzzDIDEncoding checks Decode(Encode(x)) == x and that every encoded DID
// fits SpiceDB's alphabet.
func FuzzDIDEncoding(f *testing.F) {
	for _, s := range []string{"did:plc:alice", "did:web:example.com%3A8080", "did:key:z6Mk", "did:web:a.b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, did string) {
		if _, err := syntax.ParseDID(did); err != nil {
			return
		}
		enc := EncodeDID(did)
		if len(enc) <= MaxObjectIDLen && !ValidObjectID(enc) {
			t.Fatalf("EncodeDID(%q) = %q outside SpiceDB's alphabet", did, enc)
		}
		back, err := DecodeDID(enc)
		if err != nil || back != did {
			t.Fatalf("DecodeDID(EncodeDID(%q)) = %q, %v", did, back, err)
		}
	})
}

// FuzzRecordKeyEncoding does the same for record keys and object IDs.
func FuzzRecordKeyEncoding(f *testing.F) {
	for _, s := range []string{"self", "3k2a.b~c", "a:b", "..a", "-_~.:"} {
		f.Add("did:plc:alice", s)
	}
	f.Fuzz(func(t *testing.T, did, key string) {
		if _, err := syntax.ParseRecordKey(key); err != nil {
			return
		}
		if _, err := syntax.ParseDID(did); err != nil {
			return
		}
		enc := EncodeRecordKey(key)
		back, err := DecodeRecordKey(enc)
		if err != nil || back != key {
			t.Fatalf("DecodeRecordKey(EncodeRecordKey(%q)) = %q, %v", key, back, err)
		}
		id := ObjectID(did, key)
		if len(id) <= MaxObjectIDLen && !ValidObjectID(id) {
			t.Fatalf("ObjectID(%q, %q) = %q outside SpiceDB's alphabet", did, key, id)
		}
		d2, k2, err := ParseObjectID(id)
		if err != nil || d2 != did || k2 != key {
			t.Fatalf("ParseObjectID(%q) = %q %q %v", id, d2, k2, err)
		}
		rid := RecordID(did, "com.example.x", key)
		d3, c3, k3, err := ParseRecordID(rid)
		if err != nil || d3 != did || c3 != "com.example.x" || k3 != key {
			t.Fatalf("ParseRecordID(%q) = %q %q %q %v", rid, d3, c3, k3, err)
		}
	})
}
