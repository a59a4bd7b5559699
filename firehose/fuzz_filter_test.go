package firehose

import (
	"testing"

	"github.com/ipfs/go-cid"
)

// FuzzDecodeFrameFiltered holds DecodeFrame, with a filter that keeps
// com.atproto.space.* collections, to a consumer built on indigo's
// generated decoders filtered the same way (indigoDecode): the same frames
// refused, and for the others the same event (seq, DID, rev, since, time,
// tooBig, OpCount, Malformed), the same kept ops (action, path, CID), the
// same ops dropped as unreadable, and the same CAR. Seeded with the relay
// corpus and hand-made frames: duplicate keys, non-minimal heads, the ops
// cap, and the cases of TestCommitDecodeAgreesWithIndigo.
func FuzzDecodeFrameFiltered(f *testing.F) {
	for _, b := range corpusFrames(f) {
		f.Add(b)
	}
	for _, b := range handMadeSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAgreement(t, b, spaceFilter)
	})
}

// handMadeSeeds are small frames for the corners of the agreement.
func handMadeSeeds() [][]byte {
	var out [][]byte
	good := commitFields(opsOf(opA, opPost))
	// (a) ops twice.
	out = append(out,
		commitFrame(mapOf(append(good, kv{"ops", opsOf(opB)})...)),
		commitFrame(mapOf(append(good, kv{"ops", opsOf()})...)),
		commitFrame(mapOf(append([]kv{{"ops", opsOf(opB)}}, good...)...)),
		commitFrame(mapOf(append(good, kv{"since", cb(nil).null()}, kv{"seq", cb(nil).head(majUint, 9)})...)),
	)
	// (b) non-minimal heads.
	out = append(out,
		commitFrame(mapOf(with(good, "seq", cb(nil).wide(majUint, 7, 24))...)),
		commitFrame(mapOf(with(good, "ops", append(cb(nil).wide(majArray, 2, 24), opsOf(opA, opPost)[1:]...))...)),
		commitFrame(mapOf(with(good, "repo", append(cb(nil).wide(majText, uint64(len(testDID)), 25), testDID...))...)),
		append(mapOf(kv{"t", cb(nil).text("#commit")}, kv{"op", cb(nil).wide(majUint, 1, 26)}), mapOf(good...)...),
	)
	// (c) the ops cap, with null ops (one byte each).
	nulls := func(n int) cb {
		e := cb(nil).head(majArray, uint64(n))
		for range n {
			e = e.null()
		}
		return e
	}
	out = append(out,
		commitFrame(mapOf(with(good, "ops", nulls(8192))...)),
		commitFrame(mapOf(with(good, "ops", nulls(8193))...)),
		commitFrame(mapOf(with(good, "ops", cb(nil).head(majArray, 8193))...)),
		commitFrame(mapOf(with(good, "ops", opsOf(make([]tOp, 201)...))...)),
	)
	for _, tc := range agreementCases {
		if len(tc.frame) < 16<<10 {
			out = append(out, tc.frame)
		}
	}
	return out
}

// FuzzValidCID holds validCID to go-cid's Cast.
func FuzzValidCID(f *testing.F) {
	v0, err := cid.Decode("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n")
	if err != nil {
		f.Fatal(err)
	}
	for _, b := range [][]byte{testCID.Bytes(), v0.Bytes(), {1, 0x71, 0x12, 0x20, 1}, {1, 0x55, 0, 0}, {0x12, 0x20},
		{1, 0x80, 0}, {1, 0x71, 0x12, 0x80, 0x80, 0x80, 0x80, 0x08}} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := cid.Cast(b)
		if validCID(b) != (err == nil) {
			t.Fatalf("validCID(%x) = %v, cid.Cast says %v", b, validCID(b), err)
		}
	})
}
