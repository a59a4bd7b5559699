package redact

import "regexp"

// Mask replaces what is removed.
const Mask = "REDACTED"

var (
	// userinfo: a scheme, "://", then everything up to the last "@" of the
	// authority (which ends at "/", "?", "#", whitespace or a quote).
	// Greedy, so that an unescaped "@" in a password is covered too.
	userinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s"'<>` + "`" + `]*@`)
	// query: a credential-like parameter name and its value.
	query = regexp.MustCompile(`(?i)([?&;](?:access_token|auth|auth_token|token|password|passwd|pass|pwd|secret|api_key|apikey|key|sig|signature)=)[^&#\s"'<>` + "`" + `]*`)
)

// String returns s with every URL's userinfo and every credential-like
// query value replaced by Mask.
func String(s string) string {
	s = userinfo.ReplaceAllString(s, "${1}"+Mask+"@")
	return query.ReplaceAllString(s, "${1}"+Mask)
}

// URL redacts one URL (or a comma-separated list of them, as NATS takes)
// for a log line or an error. It is String: a URL that net/url rejects is
// redacted all the same.
func URL(raw string) string { return String(raw) }

// Error wraps err so that its message is redacted; errors.Is and errors.As
// still see err. It returns nil for nil.
func Error(err error) error {
	if err == nil {
		return nil
	}
	return &redacted{err: err}
}

type redacted struct{ err error }

func (r *redacted) Error() string { return String(r.err.Error()) }
func (r *redacted) Unwrap() error { return r.err }
