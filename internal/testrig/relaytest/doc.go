// Package relaytest runs indigo's reference relay (cmd/relay, built by
// scripts/deps.sh at the indigo version go.mod pins) as a separate process
// for tests: on loopback ports, with a SQLite database and a disk persister
// in a test directory, and subscribed to the PDSs the test names.
//
//	r := relaytest.Start(t, relaytest.Config{PLCURL: a.PLCURL, Hosts: []string{"localhost:2583"}})
//	// r.SubscribeReposURL(): ws://127.0.0.1:P/xrpc/com.atproto.sync.subscribeRepos
//	r.Kill()  // SIGKILL
//	r.Start() // same port, database and persist dir; waits for the hosts again
//
// [Launch] starts the same relay outside a test (cmd/localstack's federated
// stack): a [Server], whose methods return errors where Relay's fail the
// test, stopped by its caller. Relay is a Server plus the test.
//
// # Adding localhost hosts
//
// The relay refuses to crawl a loopback PDS through com.atproto.sync.requestCrawl,
// admin or not: the host check (describeServer) goes through an SSRF-safe
// transport that rejects 127.0.0.1. Its websocket subscription to a no-SSL
// host has no such check. So Start registers the hosts the way an operator's
// database would hold them: it runs the relay once so that it creates its
// schema, stops it, inserts one row per host into the `host` table with the
// sqlite3 CLI (hostname "localhost:PORT", no_ssl, active, trusted, last_seq
// -1, account limit 1000) and starts it again, and the relay's startup
// re-subscribes every active host. [Relay.AddHosts] does the same later.
//
// # Invariants
//
//   - Start, Relay.Start and AddHosts return only once the relay's websocket
//     to every registered host has completed its handshake (the relay's
//     debug line "event subscription response" for that host, after this
//     start), so a commit written afterwards is carried. A host subscribed
//     for the first time is read from its current head (last_seq -1): commits
//     written before that are never carried.
//   - The relay never outlives the test: it is stopped in t.Cleanup and dies
//     with the test process (Pdeathsig).
//   - The relay's log (JSON lines, debug level) is a file in t.TempDir(),
//     printed when the test fails.
//
// What the relay does on its own (checked by the tests here and in package
// federation, indigo at the version go.mod pins):
//
//   - It flushes each host's cursor (last_seq) every 4 s and on a clean
//     stop. After Stop, Start replays from each PDS what it wrote while the
//     relay was down. After Kill, only from the last flush: a host whose
//     cursor was never flushed (-1) is read from its head again, and what it
//     wrote meanwhile is never relayed.
//   - Its own seqs continue across restarts (disk persister), so a reader
//     resumes from the last relay seq it read.
//   - com.atproto.sync.listHosts lists only hosts that have sent an event
//     (last_seq > 0); the admin route /admin/pds/list lists all, with
//     HasActiveConnection.
//
// What the relay does not do for loopback hosts: its getRepo answers with a
// redirect to https://localhost:PORT even for a no-SSL host, so a client must
// resolve an account's PDS from its DID document instead of following it.
package relaytest
