package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/federation"
	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// runFederated runs the federated stack (`make up FEDERATED=1`): PDS A and
// PDS B on one PLC, indigo's relay subscribed to both (federation.Launch),
// SpiceDB, and the consumer following the relay, all on loopback. It runs
// the cross-PDS group demo, then prints relationship changes until ctx ends,
// and stops everything it started.
func runFederated(ctx context.Context, consumerBin, httpAddr, datastore string) error {
	t0 := time.Now()
	logDir, err := newLogDir()
	if err != nil {
		return err
	}
	relayDir := filepath.Join(logDir, "relay")
	if err := os.Mkdir(relayDir, 0o755); err != nil {
		return err
	}

	say("starting two reference PDSs on one local PLC (Node 22) and indigo's relay crawling both ...")
	fed, err := federation.Launch(ctx, federation.Options{RelayDir: relayDir,
		RelayLog: filepath.Join(logDir, "relay.log"), LogDir: logDir})
	if err != nil {
		return fmt.Errorf("%w (run `make deps`)", err)
	}
	defer func() { _ = fed.Stop() }()

	sdb, client, dsInfo, stopSpiceDB, err := startSpiceDB(ctx, datastore)
	if err != nil {
		return err
	}
	defer stopSpiceDB()

	say("starting the consumer, following the relay ...")
	source := []string{"--relay-url", fed.Relay.URL(), "--plc-url", fed.PLCURL, "--allow-private-pds"}
	consumer, err := startConsumer(consumerBin, logDir, httpAddr, sdb, source, nil)
	if err != nil {
		return err
	}
	defer func() { _ = consumer.Stop(15 * time.Second) }()
	if err := waitReady(ctx, httpAddr, time.Minute); err != nil {
		return fmt.Errorf("%w (consumer log: %s)", err, tail(consumer.Output(), 2000))
	}

	fmt.Printf(`
running (everything on loopback), up in %v:
  PDS A      %s   (public URL %s, admin password %s)
  PDS B      %s   (public URL %s, admin password %s)
  PLC        %s   (shared by A, B, the relay and the consumer)
  relay      %s   (firehose %s; admin password %s)
  SpiceDB    %s   (preshared key %s; %s)
  consumer   http://%s   (--relay-url; /metrics /healthz /readyz /v1/status /v1/consistency)
  logs       %s
`, time.Since(t0).Round(100*time.Millisecond),
		fed.A.URL, fed.A.PublicURL, fed.A.AdminPassword, fed.B.URL, fed.B.PublicURL, fed.B.AdminPassword,
		fed.PLCURL, fed.Relay.URL(), fed.Relay.SubscribeReposURL(), fed.Relay.AdminPassword(),
		sdb.Addr, sdb.Key, dsInfo, httpAddr, logDir)

	if err := crossPDSDemo(ctx, fed, client, httpAddr); err != nil {
		return fmt.Errorf("demo: %w (consumer log: %s)", err, tail(consumer.Output(), 2000))
	}
	fmt.Printf(`
projected relationship changes appear below; Ctrl-C (or kill -INT %d) stops everything.
`, os.Getpid())
	return watch(ctx, client, consumer)
}

// crossPDSDemo: Alice on PDS A grants viewer on her space to Bob's group;
// Bob on PDS B creates the group and adds Carol, then removes her. After
// each of Bob's commits it asks /v1/consistency for the ZedToken of Bob's
// rev (his commit reached the consumer through the relay) and checks at it
// whether Carol can view Alice's space.
func crossPDSDemo(ctx context.Context, fed *federation.Servers, client *spice.Client, httpAddr string) error {
	ax, bx := fed.A.Client(), fed.B.Client()
	alice, err := ax.CreateAccount(ctx, "alice.test", "alice@example.com", password)
	if err != nil {
		return err
	}
	bob, err := bx.CreateAccount(ctx, "bob.test", "bob@example.com", password)
	if err != nil {
		return err
	}
	carol, err := bx.CreateAccount(ctx, "carol.test", "carol@example.com", password)
	if err != nil {
		return err
	}
	const (
		spaceC = "com.atproto.space.space"
		groupC = "com.atproto.space.group"
		relC   = "com.atproto.space.relation"
	)
	create := func(coll, rkey string, v map[string]any) localpds.Write {
		v["$type"] = coll
		return localpds.Write{Action: "create", Collection: coll, RKey: rkey, Value: v}
	}
	group := bob.DID + "/friends"
	space := alice.DID + "/plans"
	fmt.Printf("\ncross-PDS group demo:\n  alice %s (PDS A), bob %s and carol %s (PDS B)\n", alice.DID, bob.DID, carol.DID)

	rev, _, err := ax.ApplyWrites(ctx, alice, []localpds.Write{
		create(spaceC, "plans", map[string]any{"displayName": "Plans"}),
		create(relC, "v", map[string]any{"resourceType": "space", "resource": space, "permission": "viewer",
			"subjectType": "group", "subject": group, "subjectRelation": "member"}),
	})
	if err != nil {
		return err
	}
	fmt.Printf("  alice creates space %s and grants viewer to group:%s#member\n", space, group)
	if _, _, err := waitConsistent(ctx, httpAddr, alice.DID, rev); err != nil {
		return err
	}

	step := func(what string, writes ...localpds.Write) error {
		rev, _, err := bx.ApplyWrites(ctx, bob, writes)
		if err != nil {
			return err
		}
		fmt.Printf("  bob %s\n", what)
		token, took, err := waitConsistent(ctx, httpAddr, bob.DID, rev)
		if err != nil {
			return err
		}
		fmt.Printf("    GET /v1/consistency?did=%s&rev=%s → zedtoken %s (%v)\n", bob.DID, rev, token, took.Round(time.Millisecond))
		ok, err := check(ctx, client, token, "view", view.ObjectID(alice.DID, "plans"), carol.DID)
		if err != nil {
			return err
		}
		verdict := "denied"
		if ok {
			verdict = "allowed"
		}
		fmt.Printf("    CheckPermission at_least_as_fresh it: carol view space %s → %s\n", space, verdict)
		return nil
	}
	if err := step("creates group "+group+" and adds carol",
		create(groupC, "friends", map[string]any{"displayName": "Friends"}),
		create(relC, "c", map[string]any{"resourceType": "group", "resource": group, "permission": "direct_member",
			"subjectType": "acct", "subject": carol.DID})); err != nil {
		return err
	}
	return step("removes carol from "+group, localpds.Write{Action: "delete", Collection: relC, RKey: "c"})
}
