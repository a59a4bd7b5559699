package spice

import (
	"fmt"
	"regexp"
	"strings"
)

// SchemaItem is one top-level item of a schema text: a definition, a caveat
// or a directive (`use expiration`), with the comments and blank lines that
// precede it. Text is the item exactly as it appears, so that an item kept
// through a merge is kept byte for byte.
type SchemaItem struct {
	Kind string // "definition", "caveat" or "use"
	Name string // the definition's or caveat's name; the directive's argument
	Text string
}

// ParseSchema splits a schema text into its top-level items. It understands
// comments (`//`, `/* */`), string literals and nested braces, which is all
// it needs to find where each item ends; it does not check the items (SpiceDB
// does that when the schema is written). Text after the last item (trailing
// comments and blank lines) is returned as tail.
func ParseSchema(s string) (items []SchemaItem, tail string, err error) {
	start, i := 0, 0
	for {
		i = skipSpaceAndComments(s, i)
		if i >= len(s) {
			return items, s[start:], nil
		}
		word := identAt(s, i)
		switch word {
		case "definition", "caveat":
			j := skipSpaceAndComments(s, i+len(word))
			name := nameAt(s, j)
			if name == "" {
				return nil, "", fmt.Errorf("schema: offset %d: %s without a name", j, word)
			}
			open := strings.IndexByte(s[j:], '{')
			if open < 0 {
				return nil, "", fmt.Errorf("schema: %s %s has no body", word, name)
			}
			end, err := matchBrace(s, j+open)
			if err != nil {
				return nil, "", fmt.Errorf("schema: %s %s: %w", word, name, err)
			}
			items = append(items, SchemaItem{Kind: word, Name: name, Text: s[start:end]})
			start, i = end, end
		case "use":
			end := strings.IndexByte(s[i:], '\n')
			if end < 0 {
				end = len(s) - i
			}
			arg := strings.TrimSpace(s[i+len(word) : i+end])
			items = append(items, SchemaItem{Kind: word, Name: arg, Text: s[start : i+end]})
			start, i = i+end, i+end
		default:
			line, _, _ := strings.Cut(s[i:], "\n")
			return nil, "", fmt.Errorf("schema: offset %d: unexpected %q at the top level", i, line)
		}
	}
}

// skipSpaceAndComments returns the offset of the next byte of s from i that
// is neither white space nor inside a comment.
func skipSpaceAndComments(s string, i int) int {
	for i < len(s) {
		switch {
		case s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r':
			i++
		case strings.HasPrefix(s[i:], "//"):
			nl := strings.IndexByte(s[i:], '\n')
			if nl < 0 {
				return len(s)
			}
			i += nl + 1
		case strings.HasPrefix(s[i:], "/*"):
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				return len(s)
			}
			i += 2 + end + 2
		default:
			return i
		}
	}
	return i
}

func identAt(s string, i int) string {
	j := i
	for j < len(s) && (s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] == '_') {
		j++
	}
	return s[i:j]
}

// nameAt reads a definition or caveat name (prefix segments included).
func nameAt(s string, i int) string {
	j := i
	for j < len(s) && (s[j] >= 'a' && s[j] <= 'z' || s[j] >= '0' && s[j] <= '9' || s[j] == '_' || s[j] == '/') {
		j++
	}
	return s[i:j]
}

// matchBrace returns the offset just past the brace that closes the one at
// open, skipping comments and string literals.
func matchBrace(s string, open int) (int, error) {
	depth := 0
	for i := open; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "//") || strings.HasPrefix(s[i:], "/*"):
			i = skipSpaceAndComments(s, i)
		case s[i] == '"' || s[i] == '`' || s[i] == '\'':
			q := s[i]
			i++
			for i < len(s) && s[i] != q {
				if s[i] == '\\' && q != '`' {
					i++
				}
				i++
			}
			i++
		case s[i] == '{':
			depth++
			i++
		case s[i] == '}':
			depth--
			i++
			if depth == 0 {
				return i, nil
			}
		default:
			i++
		}
	}
	return 0, fmt.Errorf("unbalanced braces")
}

// body is an item's text from its keyword on: its leading comments and
// blank lines stripped.
func (it SchemaItem) body() string {
	i := skipSpaceAndComments(it.Text, 0)
	return it.Text[i:]
}

// normalized is the item with comments dropped and white space collapsed:
// SpiceDB reformats a schema it stores, so two texts of one definition are
// compared in this form.
func (it SchemaItem) normalized() string { return normalize(it.body()) }

func normalize(s string) string {
	var b strings.Builder
	var literals []string // a caveat's string literals, kept as they are
	for i := 0; i < len(s); {
		if q := s[i]; q == '"' || q == '`' || q == '\'' {
			j := i + 1
			for j < len(s) && s[j] != q {
				if s[j] == '\\' && q != '`' {
					j++
				}
				j++
			}
			j = min(j+1, len(s))
			fmt.Fprintf(&b, "\x01%d\x02", len(literals))
			literals = append(literals, s[i:j])
			i = j
			continue
		}
		j := skipSpaceAndComments(s, i)
		if j > i {
			b.WriteByte(' ')
			i = j
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	out := strings.TrimSpace(b.String())
	// SpiceDB writes no space inside or around some punctuation that a
	// hand-written schema may space out; drop it around all of them.
	out = spaceAroundPunct.ReplaceAllString(out, "$1")
	for k, lit := range literals {
		out = strings.Replace(out, fmt.Sprintf("\x01%d\x02", k), lit, 1)
	}
	return out
}

var spaceAroundPunct = regexp.MustCompile(` ?(->|[{}()|:+&,=#*-]) ?`)

// references lists the definition names an item's text refers to as
// `<name>` in a type position (after ":" or "|" in a relation), and as a
// whole word anywhere else too: it is used only to find items that mention
// names under a prefix, where a name is unambiguous.
var refRe = regexp.MustCompile(`[a-z][a-z0-9_]*(/[a-z][a-z0-9_]*)+(#[a-z][a-z0-9_]*)?`)

// prefixedRefs lists the references in text to names under prefix, each as
// "name" or "name#relation", comments left out.
func prefixedRefs(text string, ns Namespace) []string {
	var out []string
	for _, m := range refRe.FindAllString(normalize(text), -1) {
		if name, _, _ := strings.Cut(m, "#"); ns.Owns(name) {
			out = append(out, m)
		}
	}
	return out
}

// blankComments is s with every comment and string literal replaced by
// spaces (line breaks kept): offsets into it are offsets into s.
func blankComments(s string) string {
	b := []byte(s)
	blank := func(i, j int) {
		for k := i; k < j && k < len(b); k++ {
			if b[k] != '\n' {
				b[k] = ' '
			}
		}
	}
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "//") || strings.HasPrefix(s[i:], "/*"):
			j := skipSpaceAndComments(s, i)
			blank(i, j)
			i = j
		case s[i] == '"' || s[i] == '`' || s[i] == '\'':
			q, j := s[i], i+1
			for j < len(s) && s[j] != q {
				if s[j] == '\\' && q != '`' {
					j++
				}
				j++
			}
			blank(i, j+1)
			i = j + 1
		default:
			i++
		}
	}
	return string(b)
}
