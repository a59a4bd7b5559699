// Package pipeline wires the consumer's packages into the running daemon:
// the SpiceDB client and lease, the source's progress (checkpoint), the
// projector engine, the firehose client, the periodic reconcile and
// (optionally) the NATS fan-out, under one errgroup. cmd/consumer and the
// in-process tests use it.
//
// It decides nothing about events. What it owns is the order in which
// things start (schema check, fan-out, lease, then a run: the live
// connection before a first run's rebuild), the restart of a run after
// SpiceDB refused a relationship or was reset, and the consumer's State for
// status and readiness.
package pipeline
