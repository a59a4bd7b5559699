package firehose

// Hand-written equivalents of indigo's syntax.ParseNSID and
// syntax.ParseRecordKey for op paths, which are checked on every matched
// op: indigo's versions run a backtracking regexp and took a third of a
// matched frame's decode. FuzzSyntaxMatchesIndigo holds them equal.

func isAlpha(c byte) bool    { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isAlphaNum(c byte) bool { return isAlpha(c) || c >= '0' && c <= '9' }

// validNSID reports whether s is an NSID: at most 317 characters, three or
// more dot-separated segments of 1–63 characters; the first starts with a
// letter, every segment but the last is letters, digits and inner hyphens,
// and the last is a letter followed by letters and digits.
func validNSID(s string) bool {
	if len(s) == 0 || len(s) > 317 {
		return false
	}
	segments, start := 0, 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			continue
		}
		seg := s[start:i]
		last := i == len(s)
		if len(seg) == 0 || len(seg) > 63 {
			return false
		}
		switch {
		case last:
			if !isAlpha(seg[0]) {
				return false
			}
			for j := 1; j < len(seg); j++ {
				if !isAlphaNum(seg[j]) {
					return false
				}
			}
		default:
			if segments == 0 && !isAlpha(seg[0]) || !isAlphaNum(seg[0]) || !isAlphaNum(seg[len(seg)-1]) {
				return false
			}
			for j := 1; j < len(seg)-1; j++ {
				if c := seg[j]; !isAlphaNum(c) && c != '-' {
					return false
				}
			}
		}
		segments++
		start = i + 1
	}
	return segments >= 3
}

// validRecordKey reports whether s is a record key: 1–512 characters from
// letters, digits and "_~.:-", and not "." or "..".
func validRecordKey(s string) bool {
	if len(s) == 0 || len(s) > 512 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case isAlphaNum(c), c == '_', c == '~', c == '.', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}
