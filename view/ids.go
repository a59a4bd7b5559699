package view

import (
	"fmt"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// MaxObjectIDLen is SpiceDB's limit on the length of an object ID, in bytes.
const MaxObjectIDLen = 1024

// Wildcard is the SpiceDB wildcard subject ID (`acct:*`).
const Wildcard = "*"

// wildcardPart stands for the wildcard subject inside bookkeeping IDs, where
// a bare `*` is not allowed. No encoded DID or key can be `=` on its own.
const wildcardPart = "="

var (
	didEncoder  = strings.NewReplacer(":", "|", ".", "+", "%", "=")
	didDecoder  = strings.NewReplacer("|", ":", "+", ".", "=", "%")
	keyEncoder  = strings.NewReplacer(":", "|", ".", "+", "~", "=")
	keyDecoder  = strings.NewReplacer("|", ":", "+", ".", "=", "~")
	nsidEncoder = strings.NewReplacer(".", "+")
	nsidDecoder = strings.NewReplacer("+", ".")
)

// EncodeDID maps a syntactically valid DID into SpiceDB's object-ID alphabet:
// `:`→`|`, `.`→`+`, `%`→`=`. The mapping is injective because none of the
// replacement characters may appear in a DID.
func EncodeDID(did string) string { return didEncoder.Replace(did) }

// DecodeDID reverses EncodeDID and checks the result is a valid DID.
func DecodeDID(enc string) (string, error) {
	if strings.ContainsAny(enc, ":.%/") {
		return "", fmt.Errorf("view: decode did %q: raw character in encoded form", enc)
	}
	did := didDecoder.Replace(enc)
	if _, err := syntax.ParseDID(did); err != nil {
		return "", fmt.Errorf("view: decode did %q: %w", enc, err)
	}
	return did, nil
}

// EncodeRecordKey maps a valid record key into SpiceDB's alphabet:
// `:`→`|`, `.`→`+`, `~`→`=`.
func EncodeRecordKey(key string) string { return keyEncoder.Replace(key) }

// DecodeRecordKey reverses EncodeRecordKey and checks the result.
func DecodeRecordKey(enc string) (string, error) {
	if strings.ContainsAny(enc, ":.~/") {
		return "", fmt.Errorf("view: decode record key %q: raw character in encoded form", enc)
	}
	key := keyDecoder.Replace(enc)
	if _, err := syntax.ParseRecordKey(key); err != nil {
		return "", fmt.Errorf("view: decode record key %q: %w", enc, err)
	}
	return key, nil
}

// EncodeNSID maps an NSID into SpiceDB's alphabet (`.`→`+`).
func EncodeNSID(nsid string) string { return nsidEncoder.Replace(nsid) }

// DecodeNSID reverses EncodeNSID and checks the result.
func DecodeNSID(enc string) (string, error) {
	if strings.ContainsAny(enc, "./") {
		return "", fmt.Errorf("view: decode nsid %q: raw character in encoded form", enc)
	}
	n := nsidDecoder.Replace(enc)
	if _, err := syntax.ParseNSID(n); err != nil {
		return "", fmt.Errorf("view: decode nsid %q: %w", enc, err)
	}
	return n, nil
}

// ObjectID builds the SpiceDB object ID `<did>/<key>` of a space or group
// owned by did. Both parts must already be syntax-checked.
func ObjectID(did, key string) string { return EncodeDID(did) + "/" + EncodeRecordKey(key) }

// ParseObjectID reverses ObjectID.
func ParseObjectID(id string) (did, key string, err error) {
	encDID, encKey, ok := strings.Cut(id, "/")
	if !ok || strings.Contains(encKey, "/") {
		return "", "", fmt.Errorf("view: object id %q: want <did>/<key>", id)
	}
	if did, err = DecodeDID(encDID); err != nil {
		return "", "", err
	}
	if key, err = DecodeRecordKey(encKey); err != nil {
		return "", "", err
	}
	return did, key, nil
}

// DIDPrefix is the prefix every object ID owned by did starts with. The
// trailing slash matters: without it `did:web:example.com` would also match
// `did:web:example.com.au`.
func DIDPrefix(did string) string { return EncodeDID(did) + "/" }

// RecordID builds the bookkeeping ID of a record: `<did>/<nsid>/<rkey>`.
func RecordID(did, collection, rkey string) string {
	return EncodeDID(did) + "/" + EncodeNSID(collection) + "/" + EncodeRecordKey(rkey)
}

// ParseRecordID reverses RecordID.
func ParseRecordID(id string) (did, collection, rkey string, err error) {
	parts := strings.Split(id, "/")
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("view: record id %q: want <did>/<nsid>/<rkey>", id)
	}
	if did, err = DecodeDID(parts[0]); err != nil {
		return "", "", "", err
	}
	if collection, err = DecodeNSID(parts[1]); err != nil {
		return "", "", "", err
	}
	if rkey, err = DecodeRecordKey(parts[2]); err != nil {
		return "", "", "", err
	}
	return did, collection, rkey, nil
}

// ValidObjectID reports whether id matches SpiceDB's object-ID pattern
// `^(([a-zA-Z0-9/_|\-=+]{1,})|\*)$` and length limit.
func ValidObjectID(id string) bool {
	if id == Wildcard {
		return true
	}
	if len(id) == 0 || len(id) > MaxObjectIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '/', c == '_', c == '|', c == '-', c == '=', c == '+':
		default:
			return false
		}
	}
	return true
}
