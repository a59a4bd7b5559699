package firehose

import (
	"encoding/binary"
	"errors"
	"math"
)

// genReader reads CBOR from a byte slice exactly as the decoders that
// cbor-gen generates for indigo's types do (github.com/whyrusleeping/cbor-gen
// at the version in go.mod), so that the zero-copy frame reader refuses
// what indigo refuses and reads what it accepts the same way
// (TestCommitDecodeAgreesWithIndigo and FuzzDecodeFrameFiltered hold them
// equal). What it copies from cbor-gen:
//   - heads carry their argument in its shortest form (cbor-gen: "cbor
//     input was not canonical"); no indefinite lengths, no info 28–31;
//   - field names and string fields are text of at most 1,000,000 bytes,
//     not checked as UTF-8;
//   - a struct's map has at most 8,192 entries, and so has an array;
//   - a link is tag 42 around at most 512 bytes: 0x00, then a CID that
//     go-cid's Cast takes whole; null only where the field is a pointer;
//   - an unknown field is skipped as cbg.ScanForLinks does: to any depth,
//     checking the links in it (at most 100 bytes, any first byte).
//
// cborReader, the lenient reader of CAR headers, is held to go-car instead.
type genReader struct {
	b []byte
	i int
}

// cbor-gen's limits.
const (
	genMaxLength   = 8192      // cbg.MaxLength: entries of a struct's map, items of an array
	genMaxString   = 1_000_000 // field names and string fields
	genMaxBlocks   = 2 << 20   // #commit blocks (the generated code's byte-string cap)
	genMaxLink     = 512       // cbg.ReadCid
	genMaxScanLink = 100       // links in skipped fields (cbg.ScanForLinks)
)

var (
	errNotCanonical = errors.New("CBOR head not in its shortest form")
	errTooLong      = errors.New("CBOR length beyond the decoder's limit")
	errBadLink      = errors.New("malformed CID link")
)

// head reads an item's major type and argument, refusing an argument not
// written in its shortest form.
func (r *genReader) head() (major byte, arg uint64, err error) {
	if r.i >= len(r.b) {
		return 0, 0, errCBOR
	}
	c := r.b[r.i]
	major, info := c>>5, c&0x1f
	if info < 24 {
		r.i++
		return major, uint64(info), nil
	}
	rest := r.b[r.i+1:]
	switch info {
	case 24:
		if len(rest) < 1 {
			return 0, 0, errCBOR
		}
		if rest[0] < 24 {
			return 0, 0, errNotCanonical
		}
		r.i += 2
		return major, uint64(rest[0]), nil
	case 25:
		if len(rest) < 2 {
			return 0, 0, errCBOR
		}
		v := uint64(binary.BigEndian.Uint16(rest))
		if v <= math.MaxUint8 {
			return 0, 0, errNotCanonical
		}
		r.i += 3
		return major, v, nil
	case 26:
		if len(rest) < 4 {
			return 0, 0, errCBOR
		}
		v := uint64(binary.BigEndian.Uint32(rest))
		if v <= math.MaxUint16 {
			return 0, 0, errNotCanonical
		}
		r.i += 5
		return major, v, nil
	case 27:
		if len(rest) < 8 {
			return 0, 0, errCBOR
		}
		v := binary.BigEndian.Uint64(rest)
		if v <= math.MaxUint32 {
			return 0, 0, errNotCanonical
		}
		r.i += 9
		return major, v, nil
	}
	return 0, 0, errCBOR
}

// span returns the next n bytes without copying.
func (r *genReader) span(n uint64) ([]byte, error) {
	if n > uint64(len(r.b)-r.i) {
		return nil, errCBOR
	}
	s := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return s, nil
}

// null consumes a null and reports whether there was one.
func (r *genReader) null() bool {
	if r.i < len(r.b) && r.b[r.i] == 0xf6 {
		r.i++
		return true
	}
	return false
}

// mapHead reads the head of a struct's map.
func (r *genReader) mapHead() (uint64, error) {
	m, n, err := r.head()
	if err != nil {
		return 0, err
	}
	if m != majMap {
		return 0, errCBOR
	}
	if n > genMaxLength {
		return 0, errTooLong
	}
	return n, nil
}

// text reads a field name or a string field.
func (r *genReader) text() ([]byte, error) {
	// Most are under 24 bytes, their length in the head's byte.
	if i := r.i; i < len(r.b) {
		if c := r.b[i]; c >= majText<<5 && c < majText<<5|24 {
			if j := i + 1 + int(c&0x1f); j <= len(r.b) {
				r.i = j
				return r.b[i+1 : j], nil
			}
		}
	}
	m, n, err := r.head()
	if err != nil {
		return nil, err
	}
	if m != majText {
		return nil, errCBOR
	}
	if n > genMaxString {
		return nil, errTooLong
	}
	return r.span(n)
}

// int64 reads an int64 field.
func (r *genReader) int64() (int64, error) {
	m, n, err := r.head()
	if err != nil {
		return 0, err
	}
	if n > math.MaxInt64 || m != majUint && m != majNegint {
		return 0, errCBOR
	}
	if m == majNegint {
		return -1 - int64(n), nil
	}
	return int64(n), nil
}

// bool reads a bool field.
func (r *genReader) bool() (bool, error) {
	m, n, err := r.head()
	if err != nil || m != majSimple || n != 20 && n != 21 {
		return false, errCBOR
	}
	return n == 21, nil
}

// commonLink starts the link to a dag-cbor record under sha2-256, which
// most links are: tag 42, 37 bytes, 0x00, CIDv1, dag-cbor, sha2-256, 32
// bytes of digest.
var commonLink = [9]byte{0xd8, 42, 0x58, 37, 0, 1, 0x71, 0x12, 32}

// link reads a link field as cbg.ReadCid does and returns the CID's bytes,
// a view into the input.
func (r *genReader) link() ([]byte, error) {
	if i := r.i; len(r.b)-i >= 41 && [9]byte(r.b[i:i+9]) == commonLink {
		r.i += 41
		return r.b[i+5 : i+41], nil
	}
	m, tag, err := r.head()
	if err != nil {
		return nil, err
	}
	if m != majTag || tag != 42 {
		return nil, errBadLink
	}
	m, n, err := r.head()
	if err != nil {
		return nil, err
	}
	if m != majBytes || n > genMaxLink {
		return nil, errBadLink
	}
	b, err := r.span(n)
	if err != nil {
		return nil, err
	}
	if len(b) < 2 || b[0] != 0 || !validCID(b[1:]) {
		return nil, errBadLink
	}
	return b[1:], nil
}

// optLink reads a pointer link field: nil for null.
func (r *genReader) optLink() ([]byte, error) {
	if r.null() {
		return nil, nil
	}
	return r.link()
}

// links reads an array of links (a []LexLink field: no nulls).
func (r *genReader) links() error {
	m, n, err := r.head()
	if err != nil {
		return err
	}
	if n > genMaxLength {
		return errTooLong
	}
	if m != majArray {
		return errCBOR
	}
	for range n {
		if _, err := r.link(); err != nil {
			return err
		}
	}
	return nil
}

// scan skips one item of an unknown field as cbg.ScanForLinks does: no
// depth limit (it counts the items left, it does not recurse), lengths
// counted in uint64 as it counts them, and the links in it checked.
func (r *genReader) scan() error {
	for remaining := uint64(1); remaining > 0; remaining-- {
		m, n, err := r.head()
		if err != nil {
			return err
		}
		switch m {
		case majBytes, majText:
			if n > math.MaxInt32 {
				return errTooLong
			}
			if _, err := r.span(n); err != nil {
				return err
			}
		case majTag:
			if n != 42 {
				remaining++ // the tagged item follows
				continue
			}
			m, n, err := r.head()
			if err != nil {
				return err
			}
			if m != majBytes || n == 0 || n > genMaxScanLink {
				return errBadLink
			}
			b, err := r.span(n)
			if err != nil {
				return err
			}
			if !validCID(b[1:]) {
				return errBadLink
			}
		case majArray:
			remaining += n
		case majMap:
			remaining += n * 2
		}
	}
	return nil
}

// validCID reports whether go-cid's Cast takes b (one whole CID), without
// allocating: a CIDv0 (a bare sha2-256 multihash of 34 bytes), or version
// 1, a codec and a multihash whose digest ends b, all varints minimal.
// FuzzValidCID holds it to cid.Cast.
func validCID(b []byte) bool {
	if len(b) > 2 && b[0] == 0x12 && b[1] == 32 {
		return len(b) == 34
	}
	v, n := minimalUvarint(b)
	if n <= 0 || v != 1 {
		return false
	}
	b = b[n:]
	if _, n = minimalUvarint(b); n <= 0 {
		return false
	}
	b = b[n:]
	if len(b) < 2 {
		return false
	}
	if _, n = minimalUvarint(b); n <= 0 {
		return false
	}
	b = b[n:]
	l, n := minimalUvarint(b)
	return n > 0 && l <= math.MaxInt32 && l == uint64(len(b)-n)
}

// minimalUvarint reads a varint as go-varint's FromUvarint does (at most 9
// bytes, shortest form); n <= 0 when it can't.
func minimalUvarint(b []byte) (v uint64, n int) {
	var s uint
	for i, c := range b {
		if i == 8 && c >= 0x80 || i >= 9 {
			return 0, -1
		}
		if c < 0x80 {
			if c == 0 && s > 0 {
				return 0, -1
			}
			return v | uint64(c)<<s, i + 1
		}
		v |= uint64(c&0x7f) << s
		s += 7
	}
	return 0, 0
}
