package firehose

import (
	"encoding/binary"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// cb builds CBOR by hand, for frames no PDS sends: duplicate keys,
// non-minimal heads, oversized arrays, broken links.
type cb []byte

// head appends a head with the shortest encoding of n, as DAG-CBOR wants.
func (e cb) head(major byte, n uint64) cb {
	switch {
	case n < 24:
		return append(e, major<<5|byte(n))
	case n <= 0xff:
		return append(e, major<<5|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(e, major<<5|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(e, major<<5|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(e, major<<5|27), n)
}

// wide appends a head whose argument takes 1<<(info-24) bytes whatever its
// value: non-minimal when n is small.
func (e cb) wide(major byte, n uint64, info byte) cb {
	e = append(e, major<<5|info)
	switch info {
	case 24:
		return append(e, byte(n))
	case 25:
		return binary.BigEndian.AppendUint16(e, uint16(n))
	case 26:
		return binary.BigEndian.AppendUint32(e, uint32(n))
	}
	return binary.BigEndian.AppendUint64(e, n)
}

func (e cb) text(s string) cb  { return append(e.head(majText, uint64(len(s))), s...) }
func (e cb) bytes(b []byte) cb { return append(e.head(majBytes, uint64(len(b))), b...) }
func (e cb) null() cb          { return append(e, 0xf6) }
func (e cb) boolean(v bool) cb {
	if v {
		return append(e, 0xf5)
	}
	return append(e, 0xf4)
}

// link appends a DAG-CBOR link: tag 42 around 0x00 and the CID's bytes.
func (e cb) link(c cid.Cid) cb { return e.rawLink(c.Bytes()) }

// rawLink appends tag 42 around 0x00 and b, which need not be a CID.
func (e cb) rawLink(b []byte) cb {
	return append(append(e.head(majTag, 42).head(majBytes, uint64(len(b)+1)), 0), b...)
}

// kv is one map entry, its value already encoded.
type kv struct {
	k string
	v cb
}

// mapOf encodes the entries in the order given (duplicates kept).
func mapOf(entries ...kv) cb {
	e := cb(nil).head(majMap, uint64(len(entries)))
	for _, f := range entries {
		e = append(e.text(f.k), f.v...)
	}
	return e
}

var testCID = func() cid.Cid {
	c, err := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum([]byte("a record"))
	if err != nil {
		panic(err)
	}
	return c
}()

const testDID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"

// tOp is a repoOp of a hand-made commit.
type tOp struct {
	action, path string
	cid          bool // a link to testCID (else null)
}

func (o tOp) encode() cb {
	c := cb(nil).null()
	if o.cid {
		c = cb(nil).link(testCID)
	}
	return mapOf(kv{"cid", c}, kv{"path", cb(nil).text(o.path)}, kv{"action", cb(nil).text(o.action)})
}

func opsOf(ops ...tOp) cb {
	e := cb(nil).head(majArray, uint64(len(ops)))
	for _, o := range ops {
		e = append(e, o.encode()...)
	}
	return e
}

// commitFields are a well-formed #commit's fields (as a PDS sends them,
// ops last), with the given ops.
func commitFields(ops cb) []kv {
	return []kv{
		{"seq", cb(nil).head(majUint, 7)},
		{"rev", cb(nil).text("3lbzavqw4ms2c")},
		{"repo", cb(nil).text(testDID)},
		{"time", cb(nil).text("2026-07-04T00:00:00.000Z")},
		{"blobs", cb(nil).head(majArray, 0)},
		{"since", cb(nil).text("3lbzavqw4ms2b")},
		{"blocks", cb(nil).bytes([]byte{1, 2, 3})},
		{"commit", cb(nil).link(testCID)},
		{"rebase", cb(nil).boolean(false)},
		{"tooBig", cb(nil).boolean(false)},
		{"prevData", cb(nil).link(testCID)},
		{"ops", ops},
	}
}

// with replaces (or appends) the field k.
func with(fields []kv, k string, v cb) []kv {
	out := append([]kv(nil), fields...)
	for i := range out {
		if out[i].k == k {
			out[i].v = v
			return out
		}
	}
	return append(out, kv{k, v})
}

// without drops the field k.
func without(fields []kv, k string) []kv {
	var out []kv
	for _, f := range fields {
		if f.k != k {
			out = append(out, f)
		}
	}
	return out
}

var commitHeader = mapOf(kv{"t", cb(nil).text("#commit")}, kv{"op", cb(nil).head(majUint, 1)})

// commitFrame is a #commit frame with the header a PDS sends and body.
func commitFrame(body cb) []byte { return append(append([]byte(nil), commitHeader...), body...) }
