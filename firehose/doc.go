// Package firehose consumes a PDS's com.atproto.sync.subscribeRepos stream
// and reads repos through com.atproto.sync.getRepo and listRepos.
//
// It owns the connection (URL handling, reconnects with capped jittered
// backoff, pings, a frame size limit), the decoding of frames (#commit with
// a zero-copy reader, the others with indigo's generated CBOR types), and
// the per-DID ordered delivery of events to a Handler, parallel across DIDs
// through bounded queues.
//
// Invariants it keeps:
//   - The cursor is exclusive (?cursor=N replays seq > N) and the client
//     always resumes from the Tracker's watermark, never from the last seq
//     seen: every seq at or below the watermark has been marked Done by the
//     caller, so a reconnect or a restart loses nothing.
//   - Events of one DID reach the Handler in stream order, one at a time.
//   - Memory is bounded: the Tracker admits at most MaxInFlight events, the
//     worker queues are fixed-size, and a full queue blocks the socket reader
//     (backpressure reaches the PDS, which drops a consumer that is too slow
//     and is then resumed from the watermark).
//   - A repo snapshot is read from a spooled, unlinked temp file: memory holds
//     a bounded block index and the projected records, never the CAR.
//   - Op paths are filtered before any CAR is decoded; records are decoded
//     into generic maps (unknown lexicons are fine) and each block's CID is
//     checked against the op's CID.
//   - The zero-copy #commit reader refuses exactly what indigo's generated
//     decoder refuses and reads what it accepts the same way (duplicate
//     keys, non-minimal CBOR, the 8,192-op cap); differential tests and a
//     fuzz target against indigo hold it there.
//   - Bad input (malformed frames, unknown types, invalid DIDs, oversized
//     frames) is counted under a bounded reason, logged, and skipped; the
//     stream goes on. FutureCursor is fatal.
//   - An op whose path or action can't be read costs that op, not its
//     commit: it is dropped and counted, and the event is delivered with
//     Malformed set when the op may touch a projected collection (its
//     path passes the filter or can't be split; any op without a filter).
//     Unreadable records (CID mismatches, missing blocks) are per op too
//     (Op.Err).
//   - With Config.Verifier set (a stream read through a relay), no #commit
//     with an op that passed the filter reaches the Handler unchecked: the
//     delivery worker verifies it first (signature against the account's
//     current key, CAR and op consistency, MST inversion to prevData where
//     present; verify.go) and a refused one arrives with Event.Unverified
//     set, never silently dropped, so the watermark still moves. Commits
//     with no such op are not verified: they carry nothing projected. An
//     #identity event drops the DID's cached key (KeyPurger) in the DID's
//     lane, before its later commits are verified.
//   - With SyncConfig.VerifyKey set, a getRepo snapshot whose commit is not
//     signed by the account's key is refused (ErrUnverified).
package firehose
