//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/gorilla/websocket"

	"github.com/spaces-authz/spaces-authz/internal/testrig/federation"
	"github.com/spaces-authz/spaces-authz/internal/testrig/forge"
	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/relaytest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/internal/testrig/workload"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// The whole network in one view (DESIGN §11): two reference PDSs on one
// PLC, indigo's relay crawling both, and the consumer following the relay:
// repos read from each account's own PDS, commits verified against the
// accounts' keys, one SpiceDB for both PDSs' repos.

// fed is a world whose consumer follows a relay.
type fed struct {
	*world
	relay *relaytest.Relay
	// r is the consumer that follows the relay (projector "relay"); its
	// stack is A's, with the relay as its source.
	r *side
}

// relaySource is the projector name of the consumer that follows the relay.
const relaySource = "relay"

func newFed(t *testing.T) *fed {
	t.Helper()
	w := newWorld(t)
	relay := relaytest.Start(t, relaytest.Config{PLCURL: w.a.pds.PLCURL,
		Hosts: []string{federation.Host(t, w.a.pds), federation.Host(t, w.b.pds)}})
	st := *w.a.stack
	st.accounts = map[string]localpds.Session{}
	st.source = relayArgs(relay.URL(), w.a.pds.PLCURL)
	w.owner = relaySource
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay log (tail):\n%s", tail(relay.Log(), 3000))
		}
	})
	return &fed{world: w, relay: relay, r: &side{name: relaySource, stack: &st}}
}

// relayArgs are the consumer's arguments that follow a relay at url, with
// DIDs resolved by the test's PLC and loopback PDSs allowed.
func relayArgs(url, plc string) []string {
	return []string{"--relay-url", url, "--plc-url", plc, "--allow-private-pds"}
}

// settle waits until the relay consumer has applied a marker commit of an
// account of each PDS: every earlier commit of both is applied, as far as
// the relay relayed it. Both accounts must have projected records: a
// commit of a repo the view holds nothing of is not indexed for
// /v1/consistency (DESIGN §7).
func (f *fed) settle(ma, mb localpds.Session) {
	f.t.Helper()
	for _, m := range []struct {
		sd   *side
		sess localpds.Session
	}{{f.a, ma}, {f.b, mb}} {
		ref, err := m.sd.xrpc.CreateRecord(context.Background(), m.sess, markC, "",
			map[string]any{"$type": markC, "at": time.Now().UTC().Format(time.RFC3339Nano)})
		if err != nil {
			f.t.Fatalf("%s: marker write: %v", m.sd.name, err)
		}
		if _, err := f.r.consistentWithin(m.sess.DID, ref.Rev, 60*time.Second); err != nil {
			f.t.Fatalf("the relay consumer did not apply %s's marker commit %s: %v", m.sd.name, ref.Rev, err)
		}
	}
}

// rebuilt waits until the consumer's rebuild (a first run's) is committed.
func (sd *side) rebuilt() {
	sd.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st := sd.status()
		if st.State == "running" && st.Ready {
			return
		}
		if time.Now().After(deadline) {
			sd.t.Fatalf("%s: the rebuild did not finish: %+v", sd.name, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// allowedAt is a check at the ZedToken of /v1/consistency for did's rev.
func (f *fed) allowedAt(did, rev, resourceID, subject string) bool {
	f.t.Helper()
	token, err := f.r.consistentWithin(did, rev, 60*time.Second)
	if err != nil {
		f.t.Fatalf("consistency for %s@%s: %v", did, rev, err)
	}
	ok, err := f.r.checkAt(token, "view", resourceID, subject)
	if err != nil {
		f.t.Fatal(err)
	}
	return ok
}

// TestRelayCrossPDSGroup: Alice (on A) grants her space to Bob's group (on
// B). Bob adds Carol: Carol may view, at the ZedToken /v1/consistency
// returns for Bob's commit, which reached the consumer through the relay.
// Bob removes her: denied. Bob deletes the group: denied for everyone in it.
func TestRelayCrossPDSGroup(t *testing.T) {
	f := newFed(t)
	f.r.startDaemon()
	f.r.waitReady()
	alice, dave := f.a.account("alice"), f.a.account("dave")
	bob, carol := f.b.account("bob"), f.b.account("carol")
	s := view.ObjectID(alice.DID, "s")
	grant := f.a.apply(alice, create(spaceC, "s", space(false)),
		create(relC, "v", rel("space", alice.DID+"/s", "viewer", "group", bob.DID+"/friends", "member")))
	if _, err := f.r.consistentWithin(alice.DID, grant, time.Minute); err != nil {
		t.Fatalf("alice's grant (A, through the relay): %v", err)
	}
	rev := f.b.apply(bob, create(groupC, "friends", map[string]any{"displayName": "friends"}),
		create(relC, "c", rel("group", bob.DID+"/friends", "direct_member", "acct", carol.DID, "")))
	if !f.allowedAt(bob.DID, rev, s, carol.DID) {
		t.Fatal("carol, in bob's group on B, can't view alice's space on A")
	}
	if f.allowedAt(bob.DID, rev, s, dave.DID) {
		t.Fatal("dave can view alice's space without being in bob's group")
	}
	rev = f.b.apply(bob, del(relC, "c"),
		create(relC, "d", rel("group", bob.DID+"/friends", "direct_member", "acct", dave.DID, "")))
	if f.allowedAt(bob.DID, rev, s, carol.DID) {
		t.Fatal("carol can still view after bob removed her")
	}
	if !f.allowedAt(bob.DID, rev, s, dave.DID) {
		t.Fatal("dave, added to bob's group, can't view")
	}
	// Deleting the group deletes its record and its members' records.
	rev = f.b.apply(bob, del(groupC, "friends"), del(relC, "d"))
	if f.allowedAt(bob.DID, rev, s, dave.DID) {
		t.Fatal("dave can still view after bob deleted the group")
	}
	f.settle(alice, bob)
	n, took := f.waitOracle(time.Minute)
	verified := f.r.metricValue("spaces_authz_commits_verified_total")
	if verified < 4 {
		t.Fatalf("%v commits verified, want at least the 4 projected ones", verified)
	}
	t.Logf("%d relationships match both PDSs (after %v); %v commits verified", n, took, verified)
}

// newDriver creates perSide accounts on each PDS (alternating, so a step's
// grants cross PDSs) and a workload over all of them.
func (f *fed) newDriver(prefix string, perSide int, seed uint64, o workload.Options) *driver {
	f.t.Helper()
	d := &driver{s: f.a.stack}
	var dids []string
	for i := range 2 * perSide {
		sd := []*side{f.a, f.b}[i%2]
		sess := sd.account(fmt.Sprintf("%s%d", prefix, i))
		d.sessions, d.on = append(d.sessions, sess), append(d.on, sd.stack)
		dids = append(dids, sess.DID)
	}
	d.status, d.revs = make([]string, len(dids)), make([]string, len(dids))
	d.gen = workload.New(seed, dids, o)
	return d
}

// TestRelayKillNine: a randomized workload over accounts of both PDSs
// (grants to groups and accounts of the other PDS included, account status
// changes too) while the consumer that follows the relay is killed with
// SIGKILL again and again, its first run's rebuild included; then the view
// matches both PDSs' records, relationship for relationship.
func TestRelayKillNine(t *testing.T) {
	f := newFed(t)
	seed := workload.Seed(t, "E2E_SEED")
	d := f.newDriver("kill", 3, seed, workload.Options{StatusChanges: true})
	// The same workload, followed from both PDSs directly by one daemon
	// (one source per PDS) into a SpiceDB of its own, must end with the
	// same relationships.
	direct := f.directSide()
	direct.startDaemon()
	const minOps, minKills = 800, 10
	workDone := make(chan error, 1)
	go func() { workDone <- d.run(context.Background(), minOps) }()
	rng := rand.New(rand.NewPCG(seed, 5))
	deadline := time.Now().Add(10 * time.Minute)
	kills := 0
	finished := false
	for !finished || kills < minKills {
		p := f.r.startDaemon()
		time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond)
		if !p.Running() {
			t.Fatalf("the relay consumer exited on its own:\n%s", tail(p.Output(), 3000))
		}
		p.Kill()
		kills++
		select {
		case err := <-workDone:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the workload did not finish in 10 minutes: %d record operations, %d kills", d.ops.Load(), kills)
		}
	}
	f.r.startDaemon()
	n, took := f.waitOracle(3 * time.Minute)
	t.Logf("kills: %d; record operations: %d across %d accounts on 2 PDSs; %d relationships match both PDSs "+
		"(caught up %v after the last kill)", kills, d.ops.Load(), len(d.sessions), n, took)
	same := f.sameAs(direct, time.Minute)
	t.Logf("the daemon that follows both PDSs directly holds the same %d data and lineage relationships", same)
}

// directSide is a consumer that follows both PDSs directly (`--pds-url
// A,B`: one source per PDS) into a SpiceDB of its own, whose schema is
// applied.
func (f *fed) directSide() *side {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sdb, err := spicedbtest.StartServe(ctx, spicedbtest.ServeOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(sdb.Stop)
	client, err := spice.Dial(spice.Config{Endpoint: sdb.Addr, Token: sdb.Key, Insecure: true})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = client.Close() })
	st := *f.a.stack
	st.sdb, st.client, st.accounts = sdb, client, map[string]localpds.Session{}
	st.cli("schema", "apply")
	st.source = []string{"--pds-url", f.a.pds.URL + "," + f.b.pds.URL}
	return &side{name: "direct", stack: &st}
}

// sameAs waits until other's SpiceDB holds the same data and lineage as
// the relay consumer's, and returns how many.
func (f *fed) sameAs(other *side, timeout time.Duration) int {
	f.t.Helper()
	want := f.r.relationships(view.TypeSpace, view.TypeGroup, view.TypeLineage)
	deadline := time.Now().Add(timeout)
	for {
		got := other.relationships(view.TypeSpace, view.TypeGroup, view.TypeLineage)
		diff := testenv.Diff(got, want)
		if diff == "" {
			return len(got)
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s differs from the relay consumer's view:\n%s", other.name, diff)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// forgingProxy stands between the consumer and the relay: it passes every
// frame on, except the first #commit with a relation record of rkey
// forgeRKey, whose record it alters (subject → the attacker) and re-signs
// with its own key, keeping the CAR and MST consistent: what a hostile
// relay could send.
type forgingProxy struct {
	t       *testing.T
	srv     *httptest.Server
	relay   string
	key     atcrypto.PrivateKey
	subject string
	forged  atomic.Int32
}

const forgeRKey = "forgeme"

func newForgingProxy(t *testing.T, relayURL, subject string) *forgingProxy {
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	p := &forgingProxy{t: t, relay: relayURL, key: key, subject: subject}
	target, err := url.Parse(relayURL)
	if err != nil {
		t.Fatal(err)
	}
	rest := httputil.NewSingleHostReverseProxy(target)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/xrpc/com.atproto.sync.subscribeRepos" {
			rest.ServeHTTP(w, r)
			return
		}
		p.stream(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *forgingProxy) stream(w http.ResponseWriter, r *http.Request) {
	up, resp, err := websocket.DefaultDialer.Dial(strings.Replace(p.relay, "http", "ws", 1)+r.URL.RequestURI(), nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer up.Close()
	down, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer down.Close()
	go func() { // the consumer's close ends the upstream read below
		for {
			if _, _, err := down.ReadMessage(); err != nil {
				up.Close()
				return
			}
		}
	}()
	for {
		typ, frame, err := up.ReadMessage()
		if err != nil {
			return
		}
		if typ == websocket.BinaryMessage && p.forged.Load() == 0 { // one forgery (CompareAndSwap below)
			res, err := forge.Commit(frame, forge.Options{Key: p.key,
				Match: func(path string) bool { return path == relC+"/"+forgeRKey },
				Edit:  func(rec map[string]any) { rec["subject"] = p.subject }})
			if err == nil && p.forged.CompareAndSwap(0, 1) {
				frame = res.Frame
				p.t.Logf("forging proxy: %s altered (%s → %s), re-signed by another key", res.Path, res.OldCID, res.NewCID)
			}
		}
		if err := down.WriteMessage(typ, frame); err != nil {
			return
		}
	}
}

// TestRelayForgedCommitIsRefused: a relay that alters a projected record of
// a relayed commit (Alice's grant to Carol, re-targeted to Mallory and
// re-signed by the relay's own key) is caught: the commit is not applied,
// Alice's repo is read again from her own PDS (its signed commit checked
// too), and the view ends as her repo is: Carol allowed, Mallory denied.
func TestRelayForgedCommitIsRefused(t *testing.T) {
	f := newFed(t)
	alice, carol := f.a.account("alice"), f.b.account("carol")
	mallory := f.b.account("mallory")
	proxy := newForgingProxy(t, f.relay.URL(), mallory.DID)
	f.r.source = relayArgs(proxy.srv.URL, f.a.pds.PLCURL)
	f.r.startDaemon()
	f.r.waitReady()
	f.r.rebuilt() // the first run's rebuild has read alice's repo: the forged commit is news
	s := view.ObjectID(alice.DID, "s")
	rev := f.a.apply(alice, create(spaceC, "s", space(false)),
		create(relC, forgeRKey, rel("space", alice.DID+"/s", "viewer", "acct", carol.DID, "")))
	token, err := f.r.consistentWithin(alice.DID, rev, time.Minute)
	if err != nil {
		t.Fatalf("consistency for alice's commit (resynced from her PDS): %v", err)
	}
	if proxy.forged.Load() != 1 {
		t.Fatalf("the proxy forged %d commits, want 1", proxy.forged.Load())
	}
	for who, want := range map[string]bool{carol.DID: true, mallory.DID: false} {
		got, err := f.r.checkAt(token, "view", s, who)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("view of alice's space for %s: %v, want %v (the forged grant must not apply)", who, got, want)
		}
	}
	if v := f.r.metricValue(`spaces_authz_commits_unverified_total{reason="bad_signature"}`); v != 1 {
		t.Fatalf("unverified commits (bad_signature): %v, want 1", v)
	}
	if v := f.r.metricValue(`spaces_authz_resyncs_total{trigger="unverified"}`); v < 1 {
		t.Fatalf("resyncs after an unverified commit: %v, want 1", v)
	}
	if !strings.Contains(f.r.consumer.Output(), "commit not verified") {
		t.Fatalf("no log line says why the commit was refused:\n%s", tail(f.r.consumer.Output(), 3000))
	}
	n, _ := f.waitOracle(time.Minute)
	t.Logf("forged commit refused, alice's repo resynced from her PDS; %d relationships match both PDSs", n)
}

// TestRelayRestartsAndMigration: the relay restarts (cleanly, with writes
// made while it is down, and after a SIGKILL), PDS B restarts, and Bob
// moves from A to B while grants to him and from him exist. The consumer
// follows the relay through all of it, reads Bob's repo from B once his
// DID document says so, and ends with the view of both PDSs.
func TestRelayRestartsAndMigration(t *testing.T) {
	f := newFed(t)
	ctx := context.Background()
	alice, bob := f.a.account("alice"), f.a.account("bob")
	carol := f.b.account("carol")
	f.r.startDaemon()
	f.r.waitReady()
	f.r.rebuilt()
	// Grants to Bob (Alice's space, to him and to his group) and from him
	// (his space, to Alice); Carol is in Bob's group.
	f.a.apply(alice, create(spaceC, "s", space(false)),
		create(relC, "toBob", rel("space", alice.DID+"/s", "viewer", "acct", bob.DID, "")),
		create(relC, "toGroup", rel("space", alice.DID+"/s", "viewer", "group", bob.DID+"/g", "member")))
	f.a.apply(bob, create(spaceC, "t", space(false)), create(groupC, "g", map[string]any{"displayName": "g"}),
		create(relC, "carol", rel("group", bob.DID+"/g", "direct_member", "acct", carol.DID, "")),
		create(relC, "toAlice", rel("space", bob.DID+"/t", "viewer", "acct", alice.DID, "")))
	f.b.apply(carol, create(spaceC, "c", space(false)))
	f.waitOracle(time.Minute)

	// A clean stop: writes made while the relay is down are relayed after.
	f.relay.Stop()
	f.a.apply(alice, create(relC, "down", rel("space", alice.DID+"/s", "viewer", "acct", carol.DID, "")))
	f.b.apply(carol, create(relC, "down", rel("space", carol.DID+"/c", "viewer", "acct", alice.DID, "")))
	f.relay.Start()
	n, took := f.waitOracle(2 * time.Minute)
	t.Logf("relay stopped and started: %d relationships match after %v", n, took)
	// A SIGKILL: the relay may lose what it had not flushed; later commits
	// of the same repos chain from revs the view does not hold, which the
	// consumer resyncs from the accounts' PDSs.
	f.relay.Kill()
	f.relay.Start()
	f.a.apply(alice, create(relC, "afterKill", rel("space", alice.DID+"/s", "viewer", "acct", bob.DID, "")))
	f.b.apply(carol, del(relC, "down"))
	n, took = f.waitOracle(2 * time.Minute)
	t.Logf("relay killed and started: %d relationships match after %v", n, took)

	// PDS B restarts; the relay reconnects to it.
	if err := f.b.pds.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	rev := f.b.apply(carol, create(relC, "afterRestart", rel("space", carol.DID+"/c", "viewer", "acct", bob.DID, "")))
	if _, err := f.r.consistentWithin(carol.DID, rev, time.Minute); err != nil {
		t.Fatalf("carol's commit after B restarted: %v", err)
	}

	// Bob moves from A to B.
	moved, err := localpds.Migrate(ctx, f.a.pds, f.b.pds, bob, password)
	if err != nil {
		t.Fatal(err)
	}
	f.b.accounts["bob"] = moved
	dave := f.b.account("dave")
	rev = f.b.apply(moved, create(relC, "dave", rel("group", bob.DID+"/g", "direct_member", "acct", dave.DID, "")))
	token, err := f.r.consistentWithin(bob.DID, rev, time.Minute)
	if err != nil {
		t.Fatalf("bob's first commit on B: %v", err)
	}
	for _, c := range []struct {
		res, who string
		want     bool
	}{
		{view.ObjectID(alice.DID, "s"), dave.DID, true},  // alice's grant to bob's group, dave added on B
		{view.ObjectID(alice.DID, "s"), carol.DID, true}, // carol still in it
		{view.ObjectID(alice.DID, "s"), bob.DID, true},   // alice's grant to bob
		{view.ObjectID(bob.DID, "t"), alice.DID, true},   // bob's grant, moved with his repo
	} {
		got, err := f.r.checkAt(token, "view", c.res, c.who)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Fatalf("after bob's move: view %s for %s = %v, want %v", c.res, c.who, got, c.want)
		}
	}
	n, took = f.waitOracle(2 * time.Minute)
	t.Logf("bob moved from A to B: %d relationships match both PDSs after %v", n, took)
}
