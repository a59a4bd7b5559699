package firehose

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
)

// nested is `{"$type": "x", "v": [[[...]]]}` with depth arrays.
func nested(depth int) []byte {
	var b bytes.Buffer
	b.Write([]byte{0xa2, 0x65, '$', 't', 'y', 'p', 'e', 0x61, 'x', 0x61, 'v'})
	for range depth {
		b.WriteByte(0x81) // array of one
	}
	b.WriteByte(0x01)
	return b.Bytes()
}

func TestDecodeRecordRefusesDeepNesting(t *testing.T) {
	if v, err := DecodeRecord(nested(MaxRecordDepth - 1)); err != nil || v["$type"] != "x" {
		t.Fatalf("a record at the depth limit: %v %v", v, err)
	}
	_, err := DecodeRecord(nested(MaxRecordDepth))
	if err == nil || err.Reason != ReasonMalformedRec || !strings.Contains(err.Detail, "deeper") {
		t.Fatalf("a record over the depth limit: %v", err)
	}
	// 900 KB of nested arrays: refused by the scan, not handed to the
	// decoder (which took 36 s on it).
	if _, err := DecodeRecord(nested(900_000)); err == nil || !strings.Contains(err.Detail, "deeper") {
		t.Fatalf("900 KB of nesting: %v", err)
	}
}

func TestCheckDepthAgreesWithTheDecoder(t *testing.T) {
	for _, rec := range []map[string]any{
		{"$type": "com.atproto.space.space", "bubble": true, "displayName": "x"},
		{"$type": "a.b.c", "list": []any{int64(1), "two", map[string]any{"k": []any{}}}, "m": map[string]any{}},
	} {
		b, err := atdata.MarshalCBOR(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkDepth(b, MaxRecordDepth); err != nil {
			t.Fatalf("%v: %v", rec, err)
		}
		if err := checkDepth(b[:len(b)-1], MaxRecordDepth); err == nil {
			t.Fatalf("a cut record passed the scan")
		}
	}
	if err := checkDepth(nested(40), MaxRecordDepth); !errors.Is(err, errTooDeep) {
		t.Fatalf("40 levels: %v", err)
	}
}

func FuzzCheckDepth(f *testing.F) {
	f.Add(nested(3))
	f.Add(nested(40))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkDepth(b, MaxRecordDepth)
		if err != nil {
			return
		}
		// What the scan passes, the decoder may still refuse, but it
		// must not take long or nest deeper than the limit.
		_, _ = atdata.UnmarshalCBOR(b)
	})
}
