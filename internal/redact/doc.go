// Package redact removes credentials from text before it is logged,
// wrapped into an error or served: the userinfo of every URL
// (scheme://user:password@host becomes scheme://REDACTED@host) and the
// value of credential-like query parameters (token, password, secret, ...).
//
// Invariant: the output of String holds no userinfo of a URL that the
// input held, whatever surrounds it (quotes, the commas of a NATS server
// list, the text of a wrapped error). It works on text, not on parsed
// URLs, so it also covers the messages of net/url, which quote the URL it
// could not parse, password included.
package redact
