// Package ident resolves account identities (DID documents) for stream
// verification: an account's current signing key and PDS endpoint.
//
// It wraps indigo's identity.BaseDirectory (did:plc through a configurable
// PLC directory, did:web through https://HOST/.well-known/did.json) in
// indigo's identity.CacheDirectory, an expirable LRU bounded by
// Config.Capacity, and counts lookups and purges.
//
// Invariants it keeps:
//   - The cache is bounded: at most Capacity identities (and as many
//     handles) are held; a zero Capacity is refused, since indigo reads it
//     as "unbounded".
//   - Handles are not verified when a DID is looked up
//     (BaseDirectory.SkipHandleVerification): the consumer needs keys and
//     endpoints, and handle verification would add DNS and HTTP lookups of
//     hosts the account names.
//   - A DID that can't be resolved is an error that wraps indigo's
//     identity.ErrDIDNotFound or identity.ErrDIDResolutionFailed; failures
//     are cached for Config.ErrTTL, so a hostile stream can't make every
//     event cost a lookup.
//   - Purge drops one DID's cached identity (used on the stream's
//     #identity events, and when a signature fails: the key may have
//     rotated); the next lookup resolves it again.
//
// did:web is always fetched over https on port 443 (indigo builds the URL
// as "https://" + host; a did:web with a port is refused, and there is no
// http mode). Tests reach an httptest TLS server by giving Config.HTTP a
// transport that dials it for any host and trusts its certificate (valid
// for example.com).
package ident
