package firehose

import (
	"encoding/binary"
	"testing"

	"github.com/ipfs/go-cid"
	cbor "github.com/ipfs/go-ipld-cbor"
	car "github.com/ipld/go-car"
)

// goCARVersion decodes a CAR's header the way go-car does: the reference
// for readCARHeader.
func goCARVersion(b []byte) (uint64, bool) {
	hlen, n := binary.Uvarint(b)
	if n <= 0 || hlen == 0 || hlen > uint64(len(b)-n) {
		return 0, false
	}
	var h car.CarHeader
	if err := cbor.DecodeInto(b[n:n+int(hlen)], &h); err != nil {
		return 0, false
	}
	return h.Version, true
}

func carWithHeader(t *testing.T, h any) []byte {
	t.Helper()
	hb, err := cbor.DumpObject(h)
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.AppendUvarint(nil, uint64(len(hb))), hb...)
}

func TestCARHeaderMatchesGoCAR(t *testing.T) {
	root, err := cid.Decode("bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"v1 one root":   carWithHeader(t, &car.CarHeader{Roots: []cid.Cid{root}, Version: 1}),
		"v1 two roots":  carWithHeader(t, &car.CarHeader{Roots: []cid.Cid{root, root}, Version: 1}),
		"v1 no roots":   carWithHeader(t, &car.CarHeader{Version: 1}),
		"v2":            carWithHeader(t, &car.CarHeader{Roots: []cid.Cid{root}, Version: 2}),
		"extra field":   carWithHeader(t, map[string]any{"roots": []cid.Cid{root}, "version": 1, "x": "y"}),
		"not a map":     carWithHeader(t, []int{1}),
		"string roots":  carWithHeader(t, map[string]any{"roots": "nope", "version": 1}),
		"text version":  carWithHeader(t, map[string]any{"roots": []cid.Cid{root}, "version": "1"}),
		"empty":         {},
		"length beyond": {0x7f, 0xa0},
	}
	for i, b := range corpusFrames(t) {
		if fr, err := DecodeFrame(b, nil); err == nil && fr.blocks != nil && i%10 == 0 {
			cases["corpus frame "+string(rune('A'+i/10))] = fr.blocks
		}
	}
	for name, b := range cases {
		want, wantOK := goCARVersion(b)
		_, err := readCAR(b)
		switch {
		case wantOK && want == 1 && err != nil:
			t.Errorf("%s: go-car reads a v1 header, readCAR fails: %v", name, err)
		case (!wantOK || want != 1) && err == nil:
			t.Errorf("%s: readCAR accepts a header go-car reads as (v%d, ok=%v)", name, want, wantOK)
		}
	}
}
