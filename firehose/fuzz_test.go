package firehose

import (
	"testing"
)

// FuzzDecodeFrame feeds arbitrary bytes (seeded with real relay frames)
// through the whole decode path. It must never panic; whatever it accepts
// must be a well-formed event.
func FuzzDecodeFrame(f *testing.F) {
	for i, b := range corpusFrames(f) {
		if i%10 == 0 && len(b) < 2048 {
			f.Add(b)
		}
	}
	f.Add([]byte{0xa2, 0x61, 0x74, 0x67, 0x23, 0x63, 0x6f, 0x6d, 0x6d, 0x69, 0x74, 0x62, 0x6f, 0x70, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b, nil)
		if err != nil {
			return
		}
		n := 0
		for _, set := range []bool{fr.Event != nil, fr.Info != nil, fr.Err != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("frame with %d parts", n)
		}
		if fr.Event != nil {
			if fr.Event.Seq <= 0 || fr.Event.DID == "" {
				t.Fatalf("accepted event %+v", fr.Event)
			}
			fr.DecodeRecords()
			for _, op := range fr.Event.Ops {
				if op.Action != ActionDelete && op.Err == nil && op.Record == nil {
					t.Fatalf("op %s has neither record nor error", op.Path())
				}
			}
		}
	})
}

// FuzzReadCAR checks the CAR indexer on hostile input.
func FuzzReadCAR(f *testing.F) {
	for i, b := range corpusFrames(f) {
		if i%25 != 0 {
			continue
		}
		fr, err := DecodeFrame(b, nil)
		if err == nil && fr.blocks != nil {
			f.Add(fr.blocks)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := readCAR(b); err == nil {
			if v, ok := goCARVersion(b); !ok || v != 1 {
				t.Fatalf("readCAR accepted a header go-car reads as (v%d, ok=%v)", v, ok)
			}
		}
	})
}
