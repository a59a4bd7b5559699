// Package checkpoint owns the whole life of a source's cursor (DESIGN §4):
// where a run starts, how events complete, what each write stores, and how
// an operator moves it back.
//
//   - Read: State decodes what SpiceDB holds on the source's object
//     (projector:<source>): the cursor, the rewind marker and the rebuild
//     marker. None (−1) is the one value for "nothing": no cursor, no
//     marker, nothing begun; a stream opened at None starts live.
//   - Advanced: the Tracker is the watermark of completed events. The
//     stream reader begins events in seq order; the projector marks them
//     done in any order; the watermark is one less than the oldest event not
//     done, never the last seq seen. Begin blocks at MaxInFlight, so a stuck
//     event stops the reader instead of growing memory.
//   - Stored: Progress.Step plans the progress part of each write, which
//     travels in the same WriteRelationships call as the data it covers,
//     and Progress.Committed records it once the write succeeded. It is the
//     one place that decides whether a write may carry the cursor: the
//     cursor moves to the watermark; a first run stores no cursor until the
//     write that stores its rebuild marker (a crash in between must leave
//     "no cursor", so the next start rebuilds); the rewind marker goes with
//     the write whose cursor passes it.
//   - Rewound: Rewind plans `consumer rewind --to`: the cursor goes back and
//     the rewind marker is set at the old cursor, so each repo's first
//     replayed event resyncs it and the view never moves backwards.
//
// Invariant: the stored cursor N means every event with seq ≤ N is fully
// applied. Progress is kept per source; a source is named by the object ID
// its progress lives on.
//
// The package does no I/O with SpiceDB (package spice carries the tuples);
// the File store is for tools that keep a position locally (captures): temp
// file, fsync, rename, fsync of the directory, so a crash leaves the old or
// the new cursor, never a torn one, and a cursor that can't be read is an
// error, never a silent reset.
package checkpoint
