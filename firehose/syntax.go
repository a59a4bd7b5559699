package firehose

// Hand-written equivalents of indigo's syntax.ParseNSID and
// syntax.ParseRecordKey for op paths, which are checked on every op of a
// commit: indigo's versions run a backtracking regexp and took a third of
// a matched frame's decode. FuzzSyntaxMatchesIndigo holds them equal.

// Character classes of NSIDs and record keys.
const (
	chAlpha    = 1 << iota // a-z A-Z
	chDigit                // 0-9
	chHyphen               // -
	chRKey                 // letters, digits and _~.:-
	chAlphaNum = chAlpha | chDigit
)

var charClass = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			t[c] = chAlpha | chRKey
		case c >= '0' && c <= '9':
			t[c] = chDigit | chRKey
		case c == '-':
			t[c] = chHyphen | chRKey
		case c == '_', c == '~', c == '.', c == ':':
			t[c] = chRKey
		}
	}
	return t
}()

// validNSID reports whether s is an NSID: at most 317 characters, three or
// more dot-separated segments of 1–63 characters; the first starts with a
// letter, every segment but the last is letters, digits and inner hyphens,
// and the last is a letter followed by letters and digits. One pass.
func validNSID(s string) bool {
	if len(s) == 0 || len(s) > 317 {
		return false
	}
	dots, start, hyphen := 0, 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if n := i - start; n == 0 || n > 63 || s[start] == '-' || s[i-1] == '-' ||
				dots == 0 && charClass[s[start]]&chAlpha == 0 {
				return false
			}
			dots, start, hyphen = dots+1, i+1, false
			continue
		}
		switch charClass[c] & (chAlphaNum | chHyphen) {
		case 0:
			return false
		case chHyphen:
			hyphen = true
		}
	}
	n := len(s) - start
	return dots >= 2 && n > 0 && n <= 63 && !hyphen && charClass[s[start]]&chAlpha != 0
}

// validRecordKey reports whether s is a record key: 1–512 characters from
// letters, digits and "_~.:-", and not "." or "..".
func validRecordKey(s string) bool {
	if len(s) == 0 || len(s) > 512 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if charClass[s[i]]&chRKey == 0 {
			return false
		}
	}
	return true
}
