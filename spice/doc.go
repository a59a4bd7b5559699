// Package spice is the consumer's SpiceDB side: the client (TLS or
// plaintext, preshared key), the reads that fill the projector's cache
// (paged prefix reads per DID), the batch writer and the lease.
//
// Invariants it keeps:
//   - Every write carries a MUST_MATCH precondition on this consumer's own
//     holder tuple: a consumer that lost the lease can't write anything.
//   - Data, lineage, per-repo state, the progress step (cursor and markers,
//     planned by package checkpoint) and the heartbeat of one
//     call commit together or not at all; the writer never splits a batch
//     it was given.
//   - Errors are classified: transient ones are retried with capped,
//     jittered backoff without moving the cursor; a failed precondition is
//     resolved by re-reading the lease into ErrFenced, ErrReset or
//     ErrLeaseLost; a schema mismatch is ErrSchema (fatal configuration);
//     a relationship SpiceDB refuses is a *RefusedError, which the caller
//     bisects with DryRun.
package spice
