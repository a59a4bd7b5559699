// Package checkpoint stores a stream cursor: the watermark below which every
// event is fully applied (DESIGN §4).
//
// The daemon's cursor lives in SpiceDB and is written in the same
// WriteRelationships call as the data it covers (see package spice); the
// SpiceDB store here reads it and lets tools (rewind) move it under the
// lease. The file store is for tools that keep their position locally
// (captures): it writes a temp file, fsyncs it, renames it over the old one
// and fsyncs the directory, so a crash leaves either the old or the new
// cursor, never a torn one. A cursor that can't be read is an error, never a
// silent reset to the beginning.
package checkpoint
