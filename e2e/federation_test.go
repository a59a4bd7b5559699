//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/federation"
	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/relaytest"
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
// the relay relayed it.
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
