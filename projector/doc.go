// Package projector is the engine that keeps the authorization view equal
// to the repos' records: it decides every stream event (commits, syncs,
// account statuses) in per-DID order, diffs what records produce (package
// view) against their lineage, resyncs repos from snapshots (gaps, syncs,
// reactivations, rewinds, rebuilds), reconciles, and batches the writes.
// The cursor those writes carry is planned by package checkpoint.
//
// Invariants it keeps (DESIGN §2–§5):
//   - A record in repo A only produces tuples on A's own spaces and groups
//     (the parsed DID compared exactly), a parent only to a space of A, the
//     wildcard only on viewer; owner and inherits come only from space and
//     group records; bookkeeping definitions are never produced by a record.
//     A rejected record produces nothing: what it produced before goes.
//   - A relationship stays while any record produces it (lineage); every
//     tuple a record produces is TOUCHed again on each change, so a replay
//     heals a half-applied past.
//   - Decisions for one repo are taken in stream order on one goroutine, on
//     an overlay that includes decisions not committed yet; a repo with an
//     event pending can't be evicted from the cache.
//   - A decision's bookkeeping (the repo's rev, its status) is written with
//     the last of its writes, never before its data: a crash in between
//     replays the event instead of skipping it as a duplicate.
//   - An event counts as done (and the cursor may pass it) only when its
//     writes are committed, its resync included, and, with fan-out on, its
//     messages acknowledged.
package projector
