// Package httpapi serves the consumer's HTTP endpoints: /metrics,
// /healthz (the process is alive), /readyz (connected to the PDS and
// SpiceDB, holding the lease, not failed), /v1/status (a JSON snapshot),
// /v1/consistency (read-your-writes, DESIGN §7) and the admin API
// /v1/admin/* (resync repos; reconcile --fix uses it), and the XRPC
// procedure org.spacesauthz.sync.resyncAccount (an account resyncs its own
// repo, DESIGN §8).
//
// Invariants:
//   - The admin API acts only for a request that carries the configured
//     bearer token (compared in constant time); with no token configured it
//     is disabled and answers 403. It can be served on its own listener
//     (PublicHandler and AdminHandler), and then the public one does not
//     serve it at all.
//   - resyncAccount acts only for a valid ATProto service-auth token (the
//     issuer's DID document key, aud the configured service DID, lxm the
//     method, not expired) and only on the issuer's own repo; it is served
//     on the public listener, disabled (501) without a service DID,
//     rate-limited per account (a bounded set of token buckets) and
//     bounded in concurrency. The token is never logged.
//   - Nothing unbounded: every listener has read, write and idle timeouts,
//     /v1/consistency waits at most MaxConsistencyTimeout with at most
//     Config.MaxConsistencyWaiters waiting at once (429 past it), and a
//     resync names at most MaxResyncDIDs repos (413 past it).
//   - No secret is served: error texts (last_error, a failed resync) go
//     through internal/redact.
package httpapi
