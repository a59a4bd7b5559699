// Command localstack runs the whole system on loopback for a demo or local
// development: the reference PDS with a local PLC, SpiceDB, NATS (JetStream)
// and the consumer. It seeds two accounts with a space tree, a bubble, a
// group and grants, prints permission checks that show the derived view,
// then prints every relationship change as it is projected until Ctrl-C,
// when it stops everything it started. `make up` builds and runs it.
//
// SpiceDB runs on its memory datastore, or with --datastore postgres on a
// throwaway PostgreSQL cluster (pgtest, fsync on) in a temporary directory
// that is removed at exit (`make up DATASTORE=postgres`).
//
// With --federated (`make up FEDERATED=1`) it runs the federated stack
// instead (federated.go): two reference PDSs on one PLC, indigo's relay
// crawling both, SpiceDB and the consumer following the relay, and a demo of
// a grant on one PDS to a group on the other.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/pgtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/procs"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

func main() {
	consumerBin := flag.String("consumer", "bin/consumer", "consumer binary (make build)")
	natsBin := flag.String("nats-server", envOr("NATS_SERVER_BIN", ".cache/bin/nats-server"), "nats-server binary")
	httpAddr := flag.String("http-addr", "127.0.0.1:9464", "consumer HTTP address")
	datastore := flag.String("datastore", "memory", "SpiceDB datastore: memory, or postgres (a throwaway PostgreSQL cluster in a temporary directory, removed at exit)")
	federated := flag.Bool("federated", false, "run the federated stack: two PDSs on one PLC, indigo's relay crawling both, the consumer following the relay (no NATS), and the cross-PDS group demo")
	flag.Parse()
	if *datastore != "memory" && *datastore != "postgres" {
		fmt.Fprintf(os.Stderr, "localstack: --datastore %q: use memory or postgres\n", *datastore)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	if *federated {
		err = runFederated(ctx, *consumerBin, *httpAddr, *datastore)
	} else {
		err = run(ctx, *consumerBin, *natsBin, *httpAddr, *datastore)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "localstack: %v\n", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

const password = "demo-password"

func run(ctx context.Context, consumerBin, natsBin, httpAddr, datastore string) error {
	logDir, err := newLogDir()
	if err != nil {
		return err
	}

	say("starting the reference PDS and a local PLC (Node 22) ...")
	pds, err := localpds.Start(ctx, localpds.Options{LogFile: filepath.Join(logDir, "pds.log")})
	if err != nil {
		return err
	}
	defer func() { _ = pds.Stop() }()

	sdb, client, dsInfo, stopSpiceDB, err := startSpiceDB(ctx, datastore)
	if err != nil {
		return err
	}
	defer stopSpiceDB()

	natsPort, _ := spicedbtest.FreePort()
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	say("starting NATS with JetStream ...")
	nats, err := procs.Start(natsBin, []string{"-a", "127.0.0.1", "-p", fmt.Sprint(natsPort), "-js", "-sd",
		filepath.Join(logDir, "jetstream")}, nil, filepath.Join(logDir, "nats.log"), nil)
	if err != nil {
		return fmt.Errorf("%w (run `make deps`)", err)
	}
	defer func() { _ = nats.Stop(5 * time.Second) }()

	var extra []string
	if natsSupported(consumerBin) {
		extra = []string{"--nats-url", natsURL}
	}
	consumer, err := startConsumer(consumerBin, logDir, httpAddr, sdb, []string{"--pds-url", pds.URL}, extra)
	if err != nil {
		return err
	}
	defer func() { _ = consumer.Stop(15 * time.Second) }()

	fmt.Printf(`
running (everything on loopback):
  PDS        %s   (PLC %s, admin password %s)
  SpiceDB    %s   (preshared key %s; %s)
  NATS       %s   (JetStream)
  consumer   http://%s   (/metrics /healthz /readyz /v1/status /v1/consistency)
  logs       %s
`, pds.URL, pds.PLCURL, pds.AdminPassword, sdb.Addr, sdb.Key, dsInfo, natsURL, httpAddr, logDir)

	seed, err := seedDemo(ctx, pds, client, httpAddr)
	if err != nil {
		return fmt.Errorf("seed: %w (consumer log: %s)", err, tail(consumer.Output(), 2000))
	}
	fmt.Printf(`
write a record and watch it projected (in another terminal):
  TOKEN=$(curl -s -X POST %[1]s/xrpc/com.atproto.server.createSession -H 'content-type: application/json' \
    -d '{"identifier":"alice.test","password":"%[2]s"}' | sed 's/.*"accessJwt":"\([^"]*\)".*/\1/')
  curl -s -X POST %[1]s/xrpc/com.atproto.repo.createRecord -H "authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' -d '{"repo":"%[3]s","collection":"com.atproto.space.relation",
    "record":{"resourceType":"space","resource":"%[3]s/paid","permission":"editor","subjectType":"acct","subject":"%[4]s"}}'
  curl -s 'http://%[5]s/v1/consistency?did=%[3]s&rev=<commit.rev from the answer>'
  ./bin/consumer status --pds-url %[1]s --spicedb-endpoint %[6]s --spicedb-insecure   # with CONSUMER_SPICEDB_TOKEN=%[7]s

projected relationship changes appear below; Ctrl-C stops everything.
`, pds.URL, password, seed.alice, seed.carol, httpAddr, sdb.Addr, sdb.Key)
	return watch(ctx, client, consumer)
}

// newLogDir makes the directory of the stack's logs (kept at exit).
func newLogDir() (string, error) {
	dir, err := os.MkdirTemp("", "spaces-authz-localstack-")
	if err != nil {
		return "", err
	}
	say("logs in %s", dir)
	return dir, nil
}

func say(format string, args ...any) {
	fmt.Printf("localstack: "+format+"\n", args...)
}

// startSpiceDB starts SpiceDB (serve) on the datastore: memory, or a
// throwaway PostgreSQL cluster, migrated, and dials it. It returns the
// server, the client, a description of the datastore, and the function that
// closes the client and stops what it started.
func startSpiceDB(ctx context.Context, datastore string) (*spicedbtest.Server, *spice.Client, string, func(), error) {
	var serve spicedbtest.ServeOptions
	dsInfo := "memory datastore"
	removeDatastore := func() {}
	if datastore == "postgres" {
		say("starting PostgreSQL (a throwaway cluster, fsync on) and migrating SpiceDB's datastore ...")
		pg, err := pgtest.Start(ctx, pgtest.Options{Durable: true})
		if err != nil {
			return nil, nil, "", nil, fmt.Errorf("%w (run `make deps`)", err)
		}
		removeDatastore = pg.Remove
		if serve.PostgresURI, err = pg.CreateDB(ctx, "spicedb"); err != nil {
			removeDatastore()
			return nil, nil, "", nil, err
		}
		if err := spicedbtest.Migrate(ctx, serve.PostgresURI); err != nil {
			removeDatastore()
			return nil, nil, "", nil, err
		}
		dsInfo = "postgres datastore at " + serve.PostgresURI
	}
	say("starting SpiceDB (serve, %s) ...", dsInfo)
	sdb, err := spicedbtest.StartServe(ctx, serve)
	if err != nil {
		removeDatastore()
		return nil, nil, "", nil, err
	}
	stopServer := func() { sdb.Stop(); removeDatastore() }
	client, err := spice.Dial(spice.Config{Endpoint: sdb.Addr, Token: sdb.Key, Insecure: true})
	if err != nil {
		stopServer()
		return nil, nil, "", nil, err
	}
	return sdb, client, dsInfo, func() { _ = client.Close(); stopServer() }, nil
}

// startConsumer applies the schema, then starts `consumer run` on httpAddr
// reading source (--pds-url URL, or --relay-url URL and what goes with it),
// with extra arguments after.
func startConsumer(consumerBin, logDir, httpAddr string, sdb *spicedbtest.Server, source, extra []string) (*procs.Proc, error) {
	env := []string{"CONSUMER_SPICEDB_TOKEN=" + sdb.Key}
	common := append(slices.Clone(source), "--spicedb-endpoint", sdb.Addr, "--spicedb-insecure")
	schema, err := procs.Start(consumerBin, append([]string{"schema", "apply"}, common...), env,
		filepath.Join(logDir, "schema.log"), nil)
	if err != nil {
		return nil, fmt.Errorf("%w (run `make build`)", err)
	}
	<-schema.Done()
	if err := schema.ExitErr(); err != nil {
		return nil, fmt.Errorf("schema apply: %w: %s", err, schema.Output())
	}
	args := append([]string{"run", "--http-addr", httpAddr, "--flush-every", "200ms", "--log-format", "text"}, common...)
	return procs.Start(consumerBin, append(args, extra...), env, filepath.Join(logDir, "consumer.log"), nil)
}

// natsSupported reports whether the consumer binary has the NATS fan-out.
func natsSupported(bin string) bool {
	out, err := exec.Command(bin, "run", "-h").CombinedOutput()
	return err == nil && strings.Contains(string(out), "--nats-url")
}

type demo struct{ alice, bob, carol string }

func seedDemo(ctx context.Context, pds *localpds.PDS, client *spice.Client, httpAddr string) (demo, error) {
	x := pds.Client()
	mk := func(h string) (localpds.Session, error) {
		return x.CreateAccount(ctx, h+".test", h+"@example.com", password)
	}
	alice, err := mk("alice")
	if err != nil {
		return demo{}, err
	}
	bob, err := mk("bob")
	if err != nil {
		return demo{}, err
	}
	carol, err := mk("carol")
	if err != nil {
		return demo{}, err
	}
	a := alice.DID
	w := func(coll, rkey string, v map[string]any) localpds.Write {
		v["$type"] = coll
		return localpds.Write{Action: "create", Collection: coll, RKey: rkey, Value: v}
	}
	rel := func(res, perm, st, sub, sr string) map[string]any {
		m := map[string]any{"resourceType": "space", "resource": res, "permission": perm, "subjectType": st, "subject": sub}
		if sr != "" {
			m["subjectRelation"] = sr
		}
		return m
	}
	if _, _, err := x.ApplyWrites(ctx, bob, []localpds.Write{
		w("com.atproto.space.group", "readers", map[string]any{"displayName": "Readers"}),
		w("com.atproto.space.relation", "m1", map[string]any{"resourceType": "group", "resource": bob.DID + "/readers",
			"permission": "direct_member", "subjectType": "acct", "subject": carol.DID}),
	}); err != nil {
		return demo{}, err
	}
	rev, _, err := x.ApplyWrites(ctx, alice, []localpds.Write{
		w("com.atproto.space.space", "root", map[string]any{"displayName": "Alice's root"}),
		w("com.atproto.space.space", "paid", map[string]any{"displayName": "Paid"}),
		w("com.atproto.space.relation", "p1", rel(a+"/paid", "parent", "space", a+"/root", "")),
		w("com.atproto.space.space", "diary", map[string]any{"displayName": "Diary", "bubble": true}),
		w("com.atproto.space.relation", "p2", rel(a+"/diary", "parent", "space", a+"/root", "")),
		w("com.atproto.space.relation", "v1", rel(a+"/root", "viewer", "acct", "*", "")),
		w("com.atproto.space.relation", "e1", rel(a+"/paid", "editor", "acct", bob.DID, "")),
		w("com.atproto.space.relation", "v2", rel(a+"/paid", "viewer", "group", bob.DID+"/readers", "member")),
	})
	if err != nil {
		return demo{}, err
	}
	fmt.Printf("\nseeded: alice (%s) owns root ← paid and root ← diary (a bubble); root is public;\n"+
		"        bob (%s) edits paid; bob's group 'readers' (with carol, %s) views paid\n", a, bob.DID, carol.DID)
	token, took, err := waitConsistent(ctx, httpAddr, a, rev)
	if err != nil {
		return demo{}, err
	}
	fmt.Printf("        projected in %v (GET /v1/consistency?did=alice&rev=%s → zedtoken)\n\n", took.Round(time.Millisecond), rev)
	checks := []struct{ perm, space, who, name string }{
		{"administer", "paid", a, "alice"}, {"edit", "paid", bob.DID, "bob"}, {"view", "paid", carol.DID, "carol"},
		{"edit", "paid", carol.DID, "carol"}, {"view", "root", carol.DID, "carol"}, {"view", "diary", bob.DID, "bob"},
		{"view", "diary", a, "alice"},
	}
	fmt.Println("permission checks (CheckPermission at_least_as_fresh the zedtoken):")
	for _, c := range checks {
		ok, err := check(ctx, client, token, c.perm, view.ObjectID(a, c.space), c.who)
		if err != nil {
			return demo{}, err
		}
		mark := "no "
		if ok {
			mark = "YES"
		}
		fmt.Printf("  %s  can %-5s %-10s %s\n", mark, c.name, c.perm, client.Namespace().Type(view.TypeSpace)+" "+c.space)
	}
	return demo{alice: a, bob: bob.DID, carol: carol.DID}, nil
}

func check(ctx context.Context, c *spice.Client, token, perm, resource, did string) (bool, error) {
	resp, err := c.API().CheckPermission(ctx, &v1.CheckPermissionRequest{Consistency: spice.Consistency(token),
		Resource: &v1.ObjectReference{ObjectType: c.Namespace().Type(view.TypeSpace), ObjectId: resource}, Permission: perm,
		Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: c.Namespace().Type(view.TypeAcct),
			ObjectId: view.EncodeDID(did)}}})
	if err != nil {
		return false, err
	}
	return resp.GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION, nil
}

// watch prints relationship changes as they are projected.
func watch(ctx context.Context, c *spice.Client, consumer *procs.Proc) error {
	prev := map[string]bool{}
	first := true
	for {
		cur := map[string]bool{}
		for _, typ := range []string{"space", "group"} {
			_ = c.Read(ctx, &v1.RelationshipFilter{ResourceType: typ}, "", func(t view.Tuple) error {
				cur[c.Namespace().String(t)] = true
				return nil
			})
		}
		if !first {
			var lines []string
			for r := range cur {
				if !prev[r] {
					lines = append(lines, "  + "+r)
				}
			}
			for r := range prev {
				if !cur[r] {
					lines = append(lines, "  - "+r)
				}
			}
			sort.Strings(lines)
			if len(lines) > 0 {
				fmt.Printf("%s projected:\n%s\n", time.Now().Format("15:04:05"), strings.Join(lines, "\n"))
			}
		}
		first, prev = false, cur
		select {
		case <-ctx.Done():
			fmt.Println("\nstopping everything ...")
			return nil
		case <-consumer.Done():
			return fmt.Errorf("the consumer exited: %w\n%s", consumer.ExitErr(), tail(consumer.Output(), 2000))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
