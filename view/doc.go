// Package view is the pure part of the projection: what the authorization
// view is made of, and the privilege boundary that decides what a record
// may put into it (DESIGN §2).
//
// It holds the relationship types (Tuple, Update), the injective encoding
// of DIDs, record keys and NSIDs into SpiceDB object IDs, the rules file,
// Rules.Project (one record → the tuples it produces, or a Rejection), the
// Change that the fan-out publishes, and the vocabulary of every
// bookkeeping tuple the projector stores beside the data (lineage, repo rev
// and status, lease, cursor, markers), with their parsers.
//
// Invariants it keeps:
//   - No I/O and no state; nothing here depends on the engine, the stream,
//     or a client. Project is table-tested and fuzzed.
//   - A record in repo A only produces tuples on A's own spaces and groups
//     (the parsed DID compared exactly, never a string prefix), a parent
//     only to a space of A, the wildcard only on viewer; owner and inherits
//     come only from space and group records; bookkeeping definitions are
//     never produced by a record.
//   - Every ID produced matches SpiceDB's object-ID pattern, and every
//     prefix over one DID's objects is `<encoded did>/`, slash included.
package view
