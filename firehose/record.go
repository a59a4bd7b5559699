package firehose

import (
	"errors"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atdata"

	"github.com/spaces-authz/spaces-authz/view"
)

// MaxRecordDepth bounds how deeply a record's values may nest (maps and
// arrays). Lexicon records are shallow; a hostile one of nested arrays
// costs the generic decoder time and stack out of all proportion to its
// size, so it is refused before it is decoded.
const MaxRecordDepth = 32

// errTooDeep is the depth scan's verdict.
var errTooDeep = fmt.Errorf("record nests deeper than %d levels", MaxRecordDepth)

// DecodeRecord decodes one record block into the generic data model,
// refusing records nested deeper than MaxRecordDepth before decoding them.
// The error is an *OpError with ReasonMalformedRec.
func DecodeRecord(b []byte) (map[string]any, *OpError) {
	if err := checkDepth(b, MaxRecordDepth); err != nil {
		return nil, &OpError{Reason: ReasonMalformedRec, Detail: view.Clip(err.Error())}
	}
	v, err := atdata.UnmarshalCBOR(b)
	if err != nil {
		return nil, &OpError{Reason: ReasonMalformedRec, Detail: view.Clip(err.Error())}
	}
	return v, nil
}

// checkDepth walks the CBOR item in b without decoding it, iteratively
// (no recursion, so depth costs no stack), and fails when maps and arrays
// nest deeper than limit. It reports malformed input only as far as it
// needs to walk; the decoder judges the rest.
func checkDepth(b []byte, limit int) error {
	// remaining[i] is how many items the open container at depth i still
	// holds (a map counts keys and values).
	remaining := make([]uint64, 0, 8)
	i := 0
	for {
		if i >= len(b) {
			return errors.New("cbor: unexpected end of record")
		}
		major := b[i] >> 5
		info := b[i] & 0x1f
		i++
		var arg uint64
		switch {
		case info < 24:
			arg = uint64(info)
		case info <= 27:
			n := 1 << (info - 24)
			if i+n > len(b) {
				return errors.New("cbor: unexpected end of record")
			}
			for _, c := range b[i : i+n] {
				arg = arg<<8 | uint64(c)
			}
			i += n
		default:
			return fmt.Errorf("cbor: unsupported additional info %d", info)
		}
		children := uint64(0)
		switch major {
		case 2, 3: // byte and text strings
			if arg > uint64(len(b)-i) {
				return errors.New("cbor: unexpected end of record")
			}
			i += int(arg)
		case 4: // array
			children = arg
		case 5: // map
			if arg > uint64(len(b)) {
				return errors.New("cbor: map larger than the record")
			}
			children = 2 * arg
		case 6: // tag: its content follows as the next item
			children = 1
		}
		if children > 0 {
			if children > uint64(len(b)-i) {
				return errors.New("cbor: container larger than the record")
			}
			if len(remaining) >= limit {
				return errTooDeep
			}
			remaining = append(remaining, children)
			continue
		}
		// A complete item: close every container it completes.
		for len(remaining) > 0 {
			remaining[len(remaining)-1]--
			if remaining[len(remaining)-1] > 0 {
				break
			}
			remaining = remaining[:len(remaining)-1]
		}
		if len(remaining) == 0 {
			return nil
		}
	}
}
