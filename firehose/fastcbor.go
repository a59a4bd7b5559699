package firehose

import (
	"encoding/binary"
	"errors"
	"unsafe"

	"github.com/ipfs/go-cid"
)

// A minimal, lenient CBOR reader over a byte slice, for CAR headers (held
// to go-car's header decode by TestCARHeaderMatchesGoCAR and FuzzReadCAR).
// Frames are read by genReader, which is held to indigo's decoders.

var errCBOR = errors.New("malformed CBOR")

const maxDepth = 32

type cborReader struct {
	b []byte
	i int
}

const (
	majUint   = 0
	majNegint = 1
	majBytes  = 2
	majText   = 3
	majArray  = 4
	majMap    = 5
	majTag    = 6
	majSimple = 7
)

// head reads an item's major type and argument.
func (r *cborReader) head() (major byte, arg uint64, err error) {
	if r.i >= len(r.b) {
		return 0, 0, errCBOR
	}
	c := r.b[r.i]
	r.i++
	major, info := c>>5, c&0x1f
	rest := r.b[r.i:]
	switch info {
	case 24:
		if len(rest) < 1 {
			return 0, 0, errCBOR
		}
		r.i++
		return major, uint64(rest[0]), nil
	case 25:
		if len(rest) < 2 {
			return 0, 0, errCBOR
		}
		r.i += 2
		return major, uint64(binary.BigEndian.Uint16(rest)), nil
	case 26:
		if len(rest) < 4 {
			return 0, 0, errCBOR
		}
		r.i += 4
		return major, uint64(binary.BigEndian.Uint32(rest)), nil
	case 27:
		if len(rest) < 8 {
			return 0, 0, errCBOR
		}
		r.i += 8
		return major, binary.BigEndian.Uint64(rest), nil
	}
	if info < 24 {
		return major, uint64(info), nil
	}
	return 0, 0, errCBOR // indefinite lengths are not allowed in DAG-CBOR
}

// span returns the next n bytes without copying.
func (r *cborReader) span(n uint64) ([]byte, error) {
	if n > uint64(len(r.b)-r.i) {
		return nil, errCBOR
	}
	s := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return s, nil
}

func (r *cborReader) text() ([]byte, error) {
	m, n, err := r.head()
	if err != nil || m != majText {
		return nil, errCBOR
	}
	return r.span(n)
}

func (r *cborReader) uint() (uint64, error) {
	m, n, err := r.head()
	if err != nil || m != majUint {
		return 0, errCBOR
	}
	return n, nil
}

// link reads a DAG-CBOR CID (tag 42 around 0x00 + binary CID) or null.
func (r *cborReader) link() ([]byte, error) {
	if r.i < len(r.b) && r.b[r.i] == 0xf6 {
		r.i++
		return nil, nil
	}
	m, tag, err := r.head()
	if err != nil || m != majTag || tag != 42 {
		return nil, errCBOR
	}
	m, n, err := r.head()
	if err != nil || m != majBytes || n < 2 {
		return nil, errCBOR
	}
	b, err := r.span(n)
	if err != nil || b[0] != 0 {
		return nil, errCBOR
	}
	return b[1:], nil
}

// skip passes over one item.
func (r *cborReader) skip(depth int) error {
	if depth > maxDepth {
		return errCBOR
	}
	m, n, err := r.head()
	if err != nil {
		return err
	}
	switch m {
	case majUint, majNegint, majSimple:
		return nil
	case majBytes, majText:
		_, err := r.span(n)
		return err
	case majArray:
		for range n {
			if err := r.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case majMap:
		for range n {
			if err := r.skip(depth + 1); err != nil {
				return err
			}
			if err := r.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case majTag:
		return r.skip(depth + 1)
	}
	return errCBOR
}

// mapLen reads a map header.
func (r *cborReader) mapLen() (uint64, error) {
	m, n, err := r.head()
	if err != nil || m != majMap || n > uint64(len(r.b)) {
		return 0, errCBOR
	}
	return n, nil
}

// unsafeString views b as a string without copying, for lookups and filter
// calls that don't keep it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// readCARHeader reads a CARv1 header ({roots: [links], version}) and
// returns its version, accepting what go-car's header decode accepts (a
// differential test and fuzz target check that). The roots must be valid CIDs but are not used: the
// consumer finds records by their ops' CIDs.
func (r *cborReader) readCARHeader() (version uint64, err error) {
	n, err := r.mapLen()
	if err != nil {
		return 0, err
	}
	for range n {
		k, err := r.text()
		if err != nil {
			return 0, err
		}
		switch unsafeString(k) {
		case "version":
			if version, err = r.uint(); err != nil {
				return 0, err
			}
		case "roots":
			if r.i < len(r.b) && r.b[r.i] == 0xf6 { // null, as go-car writes no roots
				r.i++
				continue
			}
			m, l, err := r.head()
			if err != nil || m != majArray || l > uint64(len(r.b)) {
				return 0, errCBOR
			}
			for range l {
				b, err := r.link()
				if err != nil || b == nil {
					return 0, errCBOR
				}
				if _, err := cid.Cast(b); err != nil {
					return 0, err
				}
			}
		default: // go-car refuses unknown fields too
			return 0, errCBOR
		}
	}
	if r.i != len(r.b) {
		return 0, errCBOR
	}
	return version, nil
}
