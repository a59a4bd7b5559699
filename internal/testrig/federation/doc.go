// Package federation starts the federated test stack: two reference PDSs
// (localpds) on one PLC directory, and indigo's relay (relaytest) subscribed
// to both, so that a test reads both PDSs' commits from one firehose, as a
// consumer of a real network does.
//
//	s := federation.Start(t)
//	alice, _ := s.A.Client().CreateAccount(ctx, "alice.test", "alice@example.com", "password")
//	bob, _ := s.B.Client().CreateAccount(ctx, "bob.test", "bob@example.com", "password")
//	// both accounts' commits arrive on s.Relay.SubscribeReposURL()
//
// Invariant: Start returns only once the relay is subscribed to both PDSs,
// and neither PDS has an account yet, so every account's first event is
// carried. (The relay reads a host it subscribes to for the first time from
// its head: anything written earlier is never relayed.)
//
// Everything is stopped when the test ends (relay first, then B, then A and
// with it the PLC).
//
// [Launch] starts the same federation outside a test (`make up
// FEDERATED=1`, cmd/localstack): its caller stops it with [Servers.Stop].
package federation
