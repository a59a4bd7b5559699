package projector_test

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	carutil "github.com/ipld/go-car/util"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/deploy"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"

	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/projector"
)

const (
	spaceC = "com.atproto.space.space"
	groupC = "com.atproto.space.group"
	relC   = "com.atproto.space.relation"
)

func commit(t *testing.T, e *testenv.Env, did string, w ...fakepds.Write) {
	t.Helper()
	if _, _, err := e.PDS.Commit(did, w...); err != nil {
		t.Fatal(err)
	}
}

func account(t *testing.T, e *testenv.Env, name string) string {
	t.Helper()
	r, err := e.PDS.CreateAccount(name)
	if err != nil {
		t.Fatal(err)
	}
	return r.DID()
}

func has(list []string, s string) bool { return slices.Contains(list, s) }

func TestCreateUpdateMovesGrantDelete(t *testing.T) {
	e := testenv.New(t)
	alice, bob, carol := account(t, e, "alice"), account(t, e, "bob"), account(t, e, "carol")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "paid", false), testenv.Relation("create", "g1", "space", alice+"/paid", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	paid := view.ObjectID(alice, "paid")
	if !e.Check("view", "space", paid, bob) || e.Check("view", "space", paid, carol) {
		t.Fatal("bob should view, carol should not")
	}
	// The update moves the grant from bob to carol.
	commit(t, e, alice, testenv.Relation("update", "g1", "space", alice+"/paid", "viewer", "acct", carol, ""))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if e.Check("view", "space", paid, bob) || !e.Check("view", "space", paid, carol) {
		t.Fatal("after the update carol should view and bob not")
	}
	commit(t, e, alice, testenv.Delete(relC, "g1"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if e.Check("view", "space", paid, carol) {
		t.Fatal("carol still views after the grant was deleted")
	}
	if !e.Check("administer", "space", paid, alice) {
		t.Fatal("the owner lost administer")
	}
}

func TestTwoRecordsOneTuple(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	grant := "space:" + view.ObjectID(alice, "s") + "#viewer@acct:" + view.EncodeDID(bob)
	commit(t, e, alice, testenv.Space("create", "s", false),
		testenv.Relation("create", "a", "space", alice+"/s", "viewer", "acct", bob, ""),
		testenv.Relation("create", "b", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	commit(t, e, alice, testenv.Delete(relC, "a"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if !has(e.Data(), grant) {
		t.Fatal("deleting one of two producers removed the tuple")
	}
	commit(t, e, alice, testenv.Relation("create", "a", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	// Both producers deleted in one commit (one batch).
	commit(t, e, alice, testenv.Delete(relC, "a"), testenv.Delete(relC, "b"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if has(e.Data(), grant) {
		t.Fatal("the tuple survived its last producer")
	}
}

func TestUpdateToInvalidValueRemovesOldGrant(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "g", "space", alice+"/s", "editor", "acct", bob, ""))
	e.WaitCaughtUp(r)
	// editor with a wildcard is not allowed: the record is rejected and
	// what it produced before goes.
	commit(t, e, alice, testenv.Relation("update", "g", "space", alice+"/s", "editor", "acct", "*", ""))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if e.Check("edit", "space", view.ObjectID(alice, "s"), bob) {
		t.Fatal("the old grant survived an update to an invalid value")
	}
}

func TestSpaceDeletedWhileGrantsRemain(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "g", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	commit(t, e, alice, testenv.Delete(spaceC, "s"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	data := e.Data()
	s := view.ObjectID(alice, "s")
	if has(data, "space:"+s+"#owner@acct:"+view.EncodeDID(alice)) || has(data, "space:"+s+"#inherits@acct:*") {
		t.Fatal("the deleted space's own tuples remain")
	}
	if !has(data, "space:"+s+"#viewer@acct:"+view.EncodeDID(bob)) {
		t.Fatal("the grant record still exists, so its tuple must stay")
	}
}

func TestBubbleFlippedBothWays(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "root", false), testenv.Space("create", "b", false),
		testenv.Relation("create", "p", "space", alice+"/b", "parent", "space", alice+"/root", ""),
		testenv.Relation("create", "v", "space", alice+"/root", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	b := view.ObjectID(alice, "b")
	if !e.Check("view", "space", b, bob) {
		t.Fatal("a root viewer should view a child space")
	}
	commit(t, e, alice, testenv.Space("update", "b", true))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if e.Check("view", "space", b, bob) {
		t.Fatal("a bubble must stop its parents' viewers")
	}
	if !e.Check("administer", "space", b, alice) {
		t.Fatal("a bubble keeps its owner")
	}
	commit(t, e, alice, testenv.Space("update", "b", false))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if !e.Check("view", "space", b, bob) {
		t.Fatal("flipping the bubble back must restore inheritance")
	}
}

func TestAccountDeactivatedReactivatedDeleted(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Group("create", "g"),
		testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	s := view.ObjectID(alice, "s")
	e.SetStatus(alice, "deactivated")
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if len(e.Data()) != 0 || e.Check("view", "space", s, bob) {
		t.Fatalf("a deactivated account's relationships remain: %v", e.Data())
	}
	if len(e.Lineage()) == 0 {
		t.Fatal("withdrawing must keep lineage")
	}
	e.SetStatus(alice, "")
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if !e.Check("view", "space", s, bob) {
		t.Fatal("reactivation did not restore the grant")
	}
	e.SetStatus(alice, "takendown")
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	e.SetStatus(alice, "deleted")
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if n := len(e.Data()) + len(e.Lineage()); n != 0 {
		t.Fatalf("%d relationships remain after the account was deleted", n)
	}
}

func TestHostileRecordsAreRejected(t *testing.T) {
	e := testenv.New(t)
	alice, mallory := account(t, e, "alice"), account(t, e, "mallory")
	web, lookalike := account(t, e, "did:web:example.com"), account(t, e, "did:web:example.com.au")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "s", false))
	commit(t, e, lookalike, testenv.Space("create", "root", false))
	e.WaitCaughtUp(r)
	before := e.Data()
	// Mallory grants herself admin on Alice's space, and a parent link to it.
	commit(t, e, mallory, testenv.Relation("create", "h1", "space", alice+"/s", "admin", "acct", mallory, ""),
		testenv.Space("create", "m", false),
		testenv.Relation("create", "h2", "space", mallory+"/m", "parent", "space", alice+"/s", ""),
		testenv.Relation("create", "h3", "space", mallory+"/m", "owner", "acct", mallory, ""))
	// did:web:example.com claims a space of did:web:example.com.au.
	commit(t, e, web, testenv.Relation("create", "h4", "space", lookalike+"/root", "admin", "acct", web, ""))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if e.Check("administer", "space", view.ObjectID(alice, "s"), mallory) {
		t.Fatal("mallory administers alice's space")
	}
	if e.Check("administer", "space", view.ObjectID(lookalike, "root"), web) {
		t.Fatal("a did:web look-alike administers another DID's space")
	}
	after := e.Data()
	for _, s := range before {
		if !has(after, s) {
			t.Fatalf("hostile records changed the victims' relationships: %s is gone", s)
		}
	}
	for _, s := range after {
		if !has(before, s) && !strings.HasPrefix(s, "space:"+view.DIDPrefix(mallory)) {
			t.Fatalf("a hostile record produced %s", s)
		}
	}
}

func TestCheckPermissionThroughTree(t *testing.T) {
	e := testenv.New(t)
	alice, bob, carol, dave, erin := account(t, e, "alice"), account(t, e, "bob"), account(t, e, "carol"),
		account(t, e, "dave"), account(t, e, "erin")
	r := e.Start()
	// root ← team ← bubble ← inner ; a group of bob's with carol in it.
	commit(t, e, bob, testenv.Group("create", "friends"), testenv.Relation("create", "m1", "group", bob+"/friends", "direct_member", "acct", carol, ""))
	commit(t, e, alice,
		testenv.Space("create", "root", false), testenv.Space("create", "team", false), testenv.Space("create", "bub", true), testenv.Space("create", "inner", false),
		testenv.Relation("create", "p1", "space", alice+"/team", "parent", "space", alice+"/root", ""),
		testenv.Relation("create", "p2", "space", alice+"/bub", "parent", "space", alice+"/team", ""),
		testenv.Relation("create", "p3", "space", alice+"/inner", "parent", "space", alice+"/bub", ""),
		testenv.Relation("create", "a1", "space", alice+"/root", "admin", "acct", bob, ""),
		testenv.Relation("create", "e1", "space", alice+"/team", "editor", "group", bob+"/friends", "member"),
		testenv.Relation("create", "v1", "space", alice+"/bub", "viewer", "acct", dave, ""),
		testenv.Relation("create", "pub", "space", alice+"/root", "viewer", "acct", "*", ""))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	id := func(k string) string { return view.ObjectID(alice, k) }
	cases := []struct {
		perm, space, who string
		want             bool
	}{
		{"administer", "inner", alice, true}, // owners reach through bubbles
		{"administer", "team", bob, true},
		{"administer", "bub", bob, false}, // the bubble stops root's admin
		{"edit", "team", carol, true},     // through bob's group
		{"view", "team", carol, true},
		{"edit", "bub", carol, false},
		{"view", "bub", dave, true},
		{"view", "inner", dave, true}, // a space under a bubble inherits from it
		{"edit", "inner", dave, false},
		{"view", "team", erin, true}, // public viewer on root
		{"view", "bub", erin, false}, // ...stopped by the bubble
		{"view", "root", erin, true},
		{"edit", "root", erin, false},
	}
	for _, c := range cases {
		if got := e.Check(c.perm, "space", id(c.space), c.who); got != c.want {
			t.Errorf("%s on %s for %s = %v, want %v", c.perm, c.space, c.who, got, c.want)
		}
	}
	// Moving team under another parent moves its inherited grants.
	commit(t, e, alice, testenv.Space("create", "other", false),
		testenv.Relation("update", "p1", "space", alice+"/team", "parent", "space", alice+"/other", ""))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if e.Check("administer", "space", id("team"), bob) {
		t.Fatal("bob still administers team after it moved away from root")
	}
}

func TestRefusedTupleRejectsOnlyItsRecord(t *testing.T) {
	// A schema without the public viewer: the rules allow acct:* on viewer,
	// SpiceDB refuses it. Only the record producing it may be rejected.
	schema := strings.Replace(deploy.Schema, "relation viewer: acct | acct:* | group#member",
		"relation viewer: acct | group#member", 1)
	if schema == deploy.Schema {
		t.Fatal("schema replacement did not apply")
	}
	e := testenv.NewWithSchema(t, schema)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	reg := prometheus.NewRegistry()
	r := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	commit(t, e, alice, testenv.Space("create", "s", false),
		testenv.Relation("create", "ok1", "space", alice+"/s", "viewer", "acct", bob, ""),
		testenv.Relation("create", "bad", "space", alice+"/s", "viewer", "acct", "*", ""),
		testenv.Relation("create", "ok2", "space", alice+"/s", "editor", "acct", bob, ""))
	commit(t, e, alice, testenv.Space("create", "t", false))
	e.WaitCaughtUp(r)
	wantData, _ := e.Expected()
	wildcard := "space:" + view.ObjectID(alice, "s") + "#viewer@acct:*"
	wantData = slices.DeleteFunc(wantData, func(s string) bool { return s == wildcard })
	if d := testenv.Diff(e.Data(), wantData); d != "" {
		t.Fatalf("data differs:\n%s", d)
	}
	for _, l := range e.Lineage() {
		if strings.Contains(l, "/bad#") || strings.HasSuffix(l, "/bad") {
			t.Fatalf("lineage of the refused record: %s", l)
		}
	}
	if got := metrictest.Value(t, reg, "spaces_authz_rejected_records_total", "reason", "spicedb_refused"); got != 1 {
		t.Fatalf("spicedb_refused rejections = %v, want 1", got)
	}
	if got := metrictest.Value(t, reg, "spaces_authz_pipeline_restarts_total"); got != 1 {
		t.Fatalf("restarts = %v, want 1", got)
	}
}

func TestGapIsRepairedByResync(t *testing.T) {
	e := testenv.New(t)
	alice, bob, carol := account(t, e, "alice"), account(t, e, "bob"), account(t, e, "carol")
	reg := prometheus.NewRegistry()
	r := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "g", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	// Two commits the stream never carries: g vanishes, h appears.
	if _, err := e.PDS.CommitSilently(alice, testenv.Delete(relC, "g")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PDS.CommitSilently(alice, testenv.Relation("create", "h", "space", alice+"/s", "editor", "acct", carol, "")); err != nil {
		t.Fatal(err)
	}
	commit(t, e, alice, testenv.Group("create", "k"))
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	s := view.ObjectID(alice, "s")
	if e.Check("view", "space", s, bob) || !e.Check("edit", "space", s, carol) {
		t.Fatal("the resync did not repair the gap")
	}
	if got := metrictest.Value(t, reg, "spaces_authz_resyncs_total", "trigger", "gap"); got != 1 {
		t.Fatalf("gap resyncs = %v, want 1", got)
	}
	// A #sync resyncs too (and finds nothing to change).
	if _, err := e.PDS.Sync(alice); err != nil {
		t.Fatal(err)
	}
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
}

func TestSecondConsumerWaitsThenFencesTheFirst(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	a := e.Start(func(c *pipeline.Config) { c.Lease.Holder = "consumer-a" })
	commit(t, e, alice, testenv.Space("create", "s", false))
	e.WaitCaughtUp(a)
	b := e.Start(func(c *pipeline.Config) { c.Lease.Holder = "consumer-b" })
	time.Sleep(1500 * time.Millisecond)
	if st := b.Snapshot().State; st != pipeline.StateWaitingForLease {
		t.Fatalf("second consumer is %q while the lease is fresh", st)
	}
	commit(t, e, alice, testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(a)
	e.AssertMatchesOracle()

	c := e.Start(func(c *pipeline.Config) { c.Lease.Holder = "consumer-c"; c.Lease.Takeover = true })
	select {
	case <-a.Done():
		if !errors.Is(a.Err(), spice.ErrFenced) {
			t.Fatalf("consumer a ended with %v, want fenced", a.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("consumer a was not fenced after the takeover")
	}
	if st, _ := e.Client.ReadProjector(t.Context(), "default"); st.Holder != c.Snapshot().Holder ||
		!strings.HasPrefix(st.Holder, "consumer-c-") {
		t.Fatalf("holder %q, want consumer c's (%q)", st.Holder, c.Snapshot().Holder)
	}
	commit(t, e, alice, testenv.Relation("create", "w", "space", alice+"/s", "editor", "acct", bob, ""))
	e.WaitCaughtUp(c)
	e.AssertMatchesOracle()
	if st := b.Snapshot().State; st != pipeline.StateWaitingForLease {
		t.Fatalf("consumer b is %q: it must keep waiting while c heartbeats", st)
	}
}

// TestSameHolderNameIsNotShared: two processes given the same --holder
// must not both write (the holder given is a name; each process adds its
// own random suffix), and the dry-run holder can't be taken.
func TestSameHolderNameIsNotShared(t *testing.T) {
	e := testenv.New(t)
	alice := account(t, e, "alice")
	a := e.Start(func(c *pipeline.Config) { c.Lease.Holder = "same" })
	commit(t, e, alice, testenv.Space("create", "s", false))
	e.WaitCaughtUp(a)
	b := e.Start(func(c *pipeline.Config) { c.Lease.Holder = "same" })
	time.Sleep(1500 * time.Millisecond)
	if st := b.Snapshot().State; st != pipeline.StateWaitingForLease {
		t.Fatalf("a second process named like the first is %q, want waiting for the lease", st)
	}
	if a.Snapshot().Holder == b.Snapshot().Holder {
		t.Fatalf("two processes share holder %q", a.Snapshot().Holder)
	}
	_, err := spice.AcquireLease(t.Context(), spice.LeaseConfig{Client: e.Client, Name: "other",
		Holder: "dry-run-never-a-holder"})
	if err == nil {
		t.Fatal("the reserved dry-run holder took a lease")
	}
}

// TestNoFalseGapsWhenARepoTurnsProjected: a repo's commits that carry no
// projected op must not skip past the applier while an earlier commit of
// the same repo (its first projected one) is still undecided, or the next
// commit's `since` looks like a gap and the repo is resynced for nothing.
func TestNoFalseGapsWhenARepoTurnsProjected(t *testing.T) {
	e := testenv.New(t)
	var dids []string
	for i := range 100 {
		dids = append(dids, account(t, e, "gapless"+itoaTest(i)))
	}
	reg := prometheus.NewRegistry()
	r := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	post := func(k string) fakepds.Write {
		return fakepds.Write{Action: "create", Collection: "app.bsky.feed.post", RKey: k,
			Value: map[string]any{"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-01-01T00:00:00Z"}}
	}
	for round := range 3 {
		for _, did := range dids {
			commit(t, e, did, post("a"+itoaTest(round)))
			if round == 1 {
				commit(t, e, did, testenv.Space("create", "s", false))
			}
			commit(t, e, did, post("b"+itoaTest(round)))
		}
	}
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if got := metrictest.Value(t, reg, "spaces_authz_resyncs_total", "trigger", "gap"); got != 0 {
		t.Fatalf("%v false gap resyncs", got)
	}
}

func itoaTest(i int) string { return string(rune('a'+i/26%26)) + string(rune('a'+i%26)) }

// A resync that runs while the stream is behind reads the repo as it is
// now, so it can find a repo active before its activation event arrives.
// The status tuple must still end on the seq of the last #account event:
// whether a crash made the consumer replay (and resync) earlier must not
// change the bookkeeping it converges to.
func TestStatusSeqFollowsTheLastAccountEvent(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	r := e.Start()
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	// While the consumer is away: deactivate, #sync, activate. Replaying
	// them, the #sync's resync already finds the repo served.
	e.SetStatus(alice, "deactivated")
	if _, err := e.PDS.Sync(alice); err != nil {
		t.Fatal(err)
	}
	e.SetStatus(alice, "")
	activated := e.PDS.Head()
	r = e.Start()
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	want := view.StatusTuple(alice, "active", activated).String()
	if got := e.Relationships(view.TypeRepo); !has(got, want) {
		t.Fatalf("status tuple: want %s among %v", want, got)
	}
}

// A snapshot that names a record but lacks its block (the reference PDS
// served such exports after deleting one of two identical records) must
// not erase what the record produces: its content is unknown, not invalid.
// Reconcile does not call it drift either.
func TestResyncKeepsRecordsWhoseBlockIsMissing(t *testing.T) {
	e := testenv.New(t)
	alice, bob := account(t, e, "alice"), account(t, e, "bob")
	reg := prometheus.NewRegistry()
	r := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	e.PDS.Repo(alice).OmitFromExport(relC+"/v", true)
	if _, err := e.PDS.Sync(alice); err != nil { // a #sync resyncs from the incomplete export
		t.Fatal(err)
	}
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	if got := metrictest.Value(t, reg, "spaces_authz_unreadable_snapshot_records_total"); got != 1 {
		t.Fatalf("unreadable records = %v, want 1", got)
	}
	sync, err := firehose.NewSyncClient(firehose.SyncConfig{URL: e.PDS.URL()})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := (&projector.Reconciler{Rules: e.Rules, Store: spice.NewStore(e.Client), Fetcher: sync,
		Source: pipeline.DefaultName}).Check(t.Context(), alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Drift) != 0 || rep.Unreadable != 1 {
		t.Fatalf("reconcile: drift %v, unreadable %d; want none and 1", rep.Drift, rep.Unreadable)
	}
}

// A commit that names a record block it does not carry (seen from the
// reference PDS) must not be read as "the record became invalid": the
// consumer resyncs the repo and projects what the repo really holds.
func TestCommitWithoutItsRecordBlockResyncs(t *testing.T) {
	e := testenv.New(t)
	alice, bob, carol := account(t, e, "alice"), account(t, e, "bob"), account(t, e, "carol")
	reg := prometheus.NewRegistry()
	r := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	commit(t, e, alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	e.WaitCaughtUp(r)
	repo := e.PDS.Repo(alice) // not inside the callback: it runs under the server's lock
	if _, err := e.PDS.InjectSequenced(func(seq int64) ([]byte, error) {
		c, err := repo.Apply(testenv.Relation("update", "v", "space", alice+"/s", "viewer", "acct", carol, ""))
		if err != nil {
			return nil, err
		}
		if c.Blocks, err = withoutBlock(c.Blocks, *c.Ops[0].CID); err != nil {
			return nil, err
		}
		return fakepds.CommitFrame(c, seq, "2026-01-01T00:00:00Z")
	}); err != nil {
		t.Fatal(err)
	}
	e.WaitCaughtUp(r)
	e.AssertMatchesOracle()
	s := view.ObjectID(alice, "s")
	if e.Check("view", "space", s, bob) || !e.Check("view", "space", s, carol) {
		t.Fatal("the update was not projected from the repo")
	}
	if got := metrictest.Value(t, reg, "spaces_authz_resyncs_total", "trigger", "unreadable"); got != 1 {
		t.Fatalf("unreadable resyncs = %v, want 1", got)
	}
}

// withoutBlock rewrites a CAR without the block c.
func withoutBlock(carBytes []byte, c cid.Cid) ([]byte, error) {
	cr, err := car.NewCarReader(bytes.NewReader(carBytes))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := car.WriteHeader(cr.Header, &buf); err != nil {
		return nil, err
	}
	for {
		blk, err := cr.Next()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		if !blk.Cid().Equals(c) {
			if err := carutil.LdWrite(&buf, blk.Cid().Bytes(), blk.RawData()); err != nil {
				return nil, err
			}
		}
	}
}
