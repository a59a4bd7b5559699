// Package fanout publishes the changes the projector applies to NATS
// JetStream (DESIGN §6), so caches, search and notification workers learn
// what changed in the authorization view, in order, without polling SpiceDB.
//
// Invariants it keeps:
//   - A change's message has a deterministic Nats-Msg-Id (source + seq + op
//     index), and its payload is a pure function of the event and the rules
//     plus a ZedToken at least as fresh as the write that applied it: a
//     re-publish after a crash or a rewind is dropped by JetStream's
//     duplicate window (at least 10 minutes) and otherwise identical.
//   - An event counts as applied (so the cursor may pass it) only once every
//     one of its messages is acknowledged by JetStream.
//   - Memory is bounded: at most QueueBatches batches wait and at most
//     MaxInFlight messages are unacknowledged; when NATS is down, Publish
//     blocks, the projector stops taking events, nothing advances, and it
//     resumes where it stopped once NATS is back.
package fanout
