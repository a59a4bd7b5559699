//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/view"
)

// TestSpaceTreeGrantsAndMoves builds a space tree with applyWrites (a space
// and its parent relation in one commit), a bubble, a group and grants,
// checks view/edit/administer through the tree, then moves a space and a
// grant and deletes things.
func TestSpaceTreeGrantsAndMoves(t *testing.T) {
	s := newStack(t, stackOpts{})
	alice, bob, carol, dave := s.account("alice"), s.account("bob"), s.account("carol"), s.account("dave")
	s.startConsumer()
	a := alice.DID
	s.apply(bob, create(groupC, "friends", map[string]any{"displayName": "friends"}),
		create(relC, "m1", rel("group", bob.DID+"/friends", "direct_member", "acct", carol.DID, "")))
	s.apply(alice, create(spaceC, "root", space(false)))
	// A child space and its parent relation in one commit.
	s.apply(alice, create(spaceC, "team", space(false)), create(relC, "p-team", rel("space", a+"/team", "parent", "space", a+"/root", "")))
	s.apply(alice, create(spaceC, "bub", space(true)), create(relC, "p-bub", rel("space", a+"/bub", "parent", "space", a+"/team", "")),
		create(relC, "admin-bob", rel("space", a+"/root", "admin", "acct", bob.DID, "")),
		create(relC, "ed-friends", rel("space", a+"/team", "editor", "group", bob.DID+"/friends", "member")),
		create(relC, "view-dave", rel("space", a+"/bub", "viewer", "acct", dave.DID, "")))
	n, took := s.waitOracle(30 * time.Second)
	t.Logf("%d relationships match the oracle after %v", n, took)
	id := func(k string) string { return view.ObjectID(a, k) }
	for _, c := range []struct {
		perm, space, who string
		want             bool
	}{
		{"administer", "bub", alice.DID, true}, // owners reach through bubbles
		{"administer", "team", bob.DID, true},
		{"administer", "bub", bob.DID, false}, // the bubble stops root's admin
		{"edit", "team", carol.DID, true},     // through bob's group
		{"edit", "bub", carol.DID, false},
		{"view", "bub", dave.DID, true},
		{"view", "team", dave.DID, false},
	} {
		if got := s.check(c.perm, id(c.space), c.who); got != c.want {
			t.Errorf("%s on %s for %s = %v, want %v", c.perm, c.space, c.who, got, c.want)
		}
	}
	// Move team under a new parent, move dave's grant to carol, delete the group member.
	s.apply(alice, create(spaceC, "other", space(false)),
		update(relC, "p-team", rel("space", a+"/team", "parent", "space", a+"/other", "")),
		update(relC, "view-dave", rel("space", a+"/bub", "viewer", "acct", carol.DID, "")))
	s.apply(bob, del(relC, "m1"))
	s.waitOracle(30 * time.Second)
	if s.check("administer", id("team"), bob.DID) {
		t.Error("bob administers team after it moved away from root")
	}
	if s.check("view", id("bub"), dave.DID) || !s.check("view", id("bub"), carol.DID) {
		t.Error("the viewer grant did not move from dave to carol")
	}
	if s.check("edit", id("team"), carol.DID) {
		t.Error("carol edits team after leaving bob's group")
	}
	s.apply(alice, del(spaceC, "bub"), del(relC, "p-bub"))
	s.waitOracle(30 * time.Second)
	if s.check("administer", id("bub"), alice.DID) {
		t.Error("a deleted space keeps its owner")
	}
}

// TestForeignGrantIsDenied: one account tries to grant itself rights on
// another's space, and a parent link into it.
func TestForeignGrantIsDenied(t *testing.T) {
	s := newStack(t, stackOpts{})
	alice, mallory := s.account("alice"), s.account("mallory")
	s.startConsumer()
	s.waitRebuildDone() // the records below then travel on the stream only: each rejection counts once
	s.apply(alice, create(spaceC, "vault", space(true)))
	s.apply(mallory, create(relC, "h1", rel("space", alice.DID+"/vault", "admin", "acct", mallory.DID, "")),
		create(spaceC, "m", space(false)),
		create(relC, "h2", rel("space", mallory.DID+"/m", "parent", "space", alice.DID+"/vault", "")))
	s.waitOracle(30 * time.Second)
	vault := view.ObjectID(alice.DID, "vault")
	if s.check("view", vault, mallory.DID) || s.check("administer", vault, mallory.DID) {
		t.Fatal("mallory got rights on alice's space")
	}
	for _, r := range s.relationships(view.TypeSpace) {
		if strings.HasPrefix(r, "space:"+vault) && strings.Contains(r, view.EncodeDID(mallory.DID)) {
			t.Fatalf("a relationship on alice's space names mallory: %s", r)
		}
	}
	if !strings.Contains(s.metrics(), `spaces_authz_rejected_records_total{reason="foreign_resource"} 1`) {
		t.Fatalf("the rejection was not counted:\n%s", grep(s.metrics(), "rejected"))
	}
}

// TestAccountLifecycle: deactivate withdraws, activate restores, takedown
// withdraws, reversal restores, deletion removes everything.
func TestAccountLifecycle(t *testing.T) {
	s := newStack(t, stackOpts{})
	alice, bob := s.account("alice"), s.account("bob")
	s.startConsumer()
	ctx := context.Background()
	s.apply(alice, create(spaceC, "s", space(false)), create(relC, "v", rel("space", alice.DID+"/s", "viewer", "acct", bob.DID, "")),
		create(groupC, "g", map[string]any{"displayName": "g"}))
	s.waitOracle(30 * time.Second)
	sp := view.ObjectID(alice.DID, "s")
	steps := []struct {
		name   string
		do     func() error
		viewer bool
	}{
		{"deactivate", func() error { return s.xrpc.DeactivateAccount(ctx, alice) }, false},
		{"activate", func() error { return s.xrpc.ActivateAccount(ctx, alice) }, true},
		{"takedown", func() error { return s.xrpc.Takedown(ctx, s.pds.AdminPassword, alice.DID, true) }, false},
		{"reverse takedown", func() error { return s.xrpc.Takedown(ctx, s.pds.AdminPassword, alice.DID, false) }, true},
		{"delete", func() error { return s.xrpc.DeleteAccount(ctx, s.pds.AdminPassword, alice.DID) }, false},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		n, took := s.waitOracle(30 * time.Second)
		if got := s.check("view", sp, bob.DID); got != st.viewer {
			t.Fatalf("after %s: bob views = %v, want %v", st.name, got, st.viewer)
		}
		t.Logf("after %s: %d relationships match the oracle (%v)", st.name, n, took)
	}
	if n := len(s.relationships(view.TypeSpace, view.TypeGroup, view.TypeLineage)); n != 0 {
		t.Fatalf("%d relationships remain after the account was deleted", n)
	}
}

// TestPDSRestartMidStream restarts the PDS process while writes continue:
// the consumer reconnects from its watermark and loses nothing.
func TestPDSRestartMidStream(t *testing.T) {
	s := newStack(t, stackOpts{})
	alice, bob := s.account("alice"), s.account("bob")
	s.startConsumer()
	s.waitReady() // connected: the restart ends a session it must notice
	for i := range 20 {
		s.apply(alice, create(spaceC, key("s", i), space(i%3 == 0)),
			create(relC, key("r", i), rel("space", alice.DID+"/"+key("s", i), "viewer", "acct", bob.DID, "")))
		if i == 10 {
			if err := s.pds.Restart(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, took := s.waitOracle(60 * time.Second)
	t.Logf("%d relationships match after the PDS restart (%v)", n, took)
	if !strings.Contains(s.consumer.Output(), "reconnecting") {
		t.Fatal("the consumer never noticed the restart")
	}
}

// TestSpiceDBResetIsNoticed restarts SpiceDB (the memory datastore loses
// everything) under a running consumer: it must not continue silently.
func TestSpiceDBResetIsNoticed(t *testing.T) {
	s := newStack(t, stackOpts{})
	alice, bob := s.account("alice"), s.account("bob")
	s.startConsumer("--no-auto-rebuild")
	s.apply(alice, create(spaceC, "s", space(false)))
	s.waitOracle(30 * time.Second)
	s.restartSpiceDB()
	s.apply(alice, create(relC, "v", rel("space", alice.DID+"/s", "viewer", "acct", bob.DID, "")))
	select {
	case <-s.consumer.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the consumer kept running on a reset SpiceDB")
	}
	out := s.consumer.Output()
	if s.consumer.ExitErr() == nil || !strings.Contains(out, "SpiceDB was reset") {
		t.Fatalf("want a clear reset error, got exit %v:\n%s", s.consumer.ExitErr(), tail(out, 2000))
	}
}

func key(prefix string, i int) string {
	return prefix + string(rune('a'+i%26)) + string(rune('a'+i/26))
}

// TestSpiceDBResetRebuildsAutomatically restarts SpiceDB (the memory
// datastore loses everything) under a running consumer: it notices and
// rebuilds the view from repo snapshots, with no drift.
func TestSpiceDBResetRebuildsAutomatically(t *testing.T) {
	s := newStack(t, stackOpts{})
	alice, bob := s.account("alice"), s.account("bob")
	s.startConsumer()
	s.apply(alice, create(spaceC, "s", space(false)), create(relC, "v", rel("space", alice.DID+"/s", "viewer", "acct", bob.DID, "")))
	s.apply(bob, create(groupC, "g", map[string]any{"displayName": "g"}))
	s.waitOracle(30 * time.Second)
	s.restartSpiceDB()
	s.apply(alice, create(relC, "w", rel("space", alice.DID+"/s", "editor", "acct", bob.DID, "")))
	n, took := s.waitOracle(60 * time.Second)
	if !s.consumer.Running() {
		t.Fatalf("the consumer exited instead of rebuilding:\n%s", tail(s.consumer.Output(), 2000))
	}
	if !strings.Contains(s.consumer.Output(), "SpiceDB was reset") {
		t.Fatal("the reset was not reported")
	}
	t.Logf("rebuilt after the SpiceDB reset: %d relationships match the oracle (%v)", n, took)
}

// restartSpiceDB kills SpiceDB (SIGKILL) and starts it again on the same
// address and key. The memory datastore comes back empty, and the schema is
// applied again (as an operator would); on PostgreSQL it serves the same
// database, whose schema and relationships survive (nothing is applied).
func (s *stack) restartSpiceDB() {
	s.t.Helper()
	s.stopSpiceDB()
	s.startSpiceDB()
}

// stopSpiceDB kills SpiceDB (SIGKILL); startSpiceDB starts it again.
func (s *stack) stopSpiceDB() { s.sdb.Stop() }

// startSpiceDB starts SpiceDB on the address, key and database of the one
// stopSpiceDB killed.
func (s *stack) startSpiceDB() {
	s.t.Helper()
	sdb, err := spicedbtest.StartServe(context.Background(),
		spicedbtest.ServeOptions{Addr: s.sdb.Addr, Key: s.sdb.Key, PostgresURI: s.pgURI})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(sdb.Stop)
	s.sdb = sdb
	s.dial()
	if s.pg == nil {
		s.cli("schema", "apply")
	}
}

// TestIdenticalRecordsInSeparateCommits: records with the same content have
// the same CID, so a commit's record block may already be in the repo (a
// second identical record, an update to the same content). The PDS still
// sends the block; each record must be projected with its own lineage.
func TestIdenticalRecordsInSeparateCommits(t *testing.T) {
	s := newStack(t, stackOpts{})
	alice, bob := s.account("alice"), s.account("bob")
	s.startConsumer()
	grant := rel("group", alice.DID+"/g", "direct_member", "acct", bob.DID, "")
	s.apply(alice, create(groupC, "g", map[string]any{"$type": groupC, "displayName": "group"}), create(relC, "r1", grant))
	s.apply(alice, create(relC, "r2", grant))
	s.waitOracle(30 * time.Second)
	// An update to the same content: its CID is unchanged, the block is
	// not new to the repo.
	s.apply(alice, update(relC, "r1", grant))
	s.apply(alice, update(relC, "r2", grant), create(spaceC, "s", space(false)))
	s.waitOracle(30 * time.Second)
	for _, line := range strings.Split(grep(s.metrics(), "spaces_authz_firehose_bad_ops_total{"), "\n") {
		if line != "" && !strings.HasSuffix(line, " 0") {
			t.Fatalf("a record was unreadable: %s", line)
		}
	}
}

// waitRebuildDone waits until the consumer's first-run rebuild is
// committed (its state is "running", no longer "running (rebuilding)").
func (s *stack) waitRebuildDone() {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			State string `json:"state"`
		}
		resp, err := http.Get("http://" + s.httpAddr + "/v1/status")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if err == nil && st.State == "running" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the first-run rebuild did not finish: state %q, %v", st.State, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
