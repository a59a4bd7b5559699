//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// TestTwoPDSsShareOneSpiceDB runs two reference PDSs on one PLC, one
// SpiceDB and two consumer processes (projectors pds-a and pds-b), with
// grants across the two PDSs, in three steps that build on each other:
//
//   - zero drift: both consumers project their own PDS; SpiceDB equals the
//     combined oracle, each repo is owned by its PDS's projector, and
//     checks that cross the PDSs answer as written here;
//   - pds-b leaves pds-a's repos alone: pds-b's rebuild, reconcile --fix
//     (of one of A's accounts, and of everything), admin resync of A's
//     accounts and the deletion of one of B's accounts leave every
//     relationship of A's repos byte-identical, even a forged one that A's
//     own reconcile then finds and repairs;
//   - migration: an account moves from A to B (the reference PDS's own
//     flow), writes a new grant on B and is deleted on A; pds-b takes the
//     repo over (its source tuple, pds-a's epoch moved once), A's later
//     #account deactivated and deleted change nothing, and a check that
//     depends on the account's old records never denies except in the
//     window DESIGN §4 allows (A's deactivation applied before B's claim).
func TestTwoPDSsShareOneSpiceDB(t *testing.T) {
	t0 := time.Now()
	w := newWorld(t)
	A, B := w.a, w.b
	t1 := time.Now()
	alice, dave := A.account("alice"), A.account("dave")
	bob, carol, erin := B.account("bob"), B.account("carol"), B.account("erin")
	t2 := time.Now()
	A.startDaemon()
	B.startDaemon()
	A.waitReady()
	B.waitReady()
	t.Logf("5 accounts in %v; both daemons ready in %v", t2.Sub(t1).Round(time.Millisecond), time.Since(t2).Round(time.Millisecond))

	al, dv, bb := alice.DID, dave.DID, bob.DID
	id := view.ObjectID
	checks := func(t *testing.T, when string, cs ...chk) {
		t.Helper()
		for _, c := range cs {
			if got := w.a.check(c.perm, c.space, c.who); got != c.want {
				t.Errorf("%s: %s on %s for %s = %v, want %v", when, c.perm, c.space, c.who, got, c.want)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}

	if !t.Run("zero drift", func(t *testing.T) {
		start := time.Now()
		B.apply(bob, create(groupC, "friends", map[string]any{"displayName": "friends"}),
			create(relC, "m-alice", rel("group", bb+"/friends", "direct_member", "acct", al, "")),
			create(relC, "m-carol", rel("group", bb+"/friends", "direct_member", "acct", carol.DID, "")))
		A.apply(dave, create(groupC, "club", map[string]any{"displayName": "club"}),
			create(relC, "m-bob", rel("group", dv+"/club", "direct_member", "acct", bb, "")),
			create(relC, "m-erin", rel("group", dv+"/club", "direct_member", "acct", erin.DID, "")),
			create(spaceC, "d", space(true)),
			create(relC, "v-club", rel("space", dv+"/d", "viewer", "group", dv+"/club", "member")))
		A.apply(alice, create(spaceC, "home", space(false)),
			create(spaceC, "proj", space(false)), create(relC, "p-proj", rel("space", al+"/proj", "parent", "space", al+"/home", "")),
			create(relC, "view-friends", rel("space", al+"/home", "viewer", "group", bb+"/friends", "member")),
			create(relC, "ed-carol", rel("space", al+"/proj", "editor", "acct", carol.DID, "")),
			create(relC, "admin-erin", rel("space", al+"/home", "admin", "acct", erin.DID, "")))
		B.apply(bob, create(spaceC, "b", space(false)),
			create(relC, "ed-club", rel("space", bb+"/b", "editor", "group", dv+"/club", "member")))
		B.apply(carol, create(spaceC, "c", space(true)), create(relC, "adm-alice", rel("space", carol.DID+"/c", "admin", "acct", al, "")))
		B.apply(erin, create(spaceC, "e", space(false)), create(relC, "v-dave", rel("space", erin.DID+"/e", "viewer", "acct", dv, "")))
		ta, tb := A.caughtUp(dave), B.caughtUp(bob)
		n, took := w.waitOracle(30 * time.Second)
		checks(t, "both PDSs projected",
			chk{"view", id(al, "home"), carol.DID, true}, // alice (A) → bob's group (B) → carol (B)
			chk{"edit", id(al, "proj"), carol.DID, true},
			chk{"view", id(al, "home"), dv, false},
			chk{"administer", id(al, "proj"), erin.DID, true}, // through proj's parent
			chk{"edit", id(bb, "b"), erin.DID, true},          // bob (B) → dave's club (A) → erin (B)
			chk{"view", id(dv, "d"), bb, true},
			chk{"administer", id(carol.DID, "c"), al, true},
			chk{"view", id(erin.DID, "e"), dv, true},
			chk{"view", id(erin.DID, "e"), bb, false})
		t.Logf("writes and catch-up in %v (A %v, B %v); %d relationships match the combined oracle (%v)",
			time.Since(start).Round(time.Millisecond), ta.Round(time.Millisecond), tb.Round(time.Millisecond), n, took)
	}) {
		return
	}

	// A relationship under alice's prefix that no record produces, put
	// there behind pds-a's back: pds-b must not repair it (alice is not
	// its repo); pds-a's reconcile finds it at the end of the step.
	forged := view.Tuple{ResourceType: view.TypeSpace, ResourceID: id(al, "home"), Relation: "admin",
		SubjectType: view.TypeAcct, SubjectID: view.EncodeDID("did:plc:forgedforgedforged")}
	if !t.Run("pds-b leaves pds-a's repos alone", func(t *testing.T) {
		ctx := context.Background()
		writeRels(t, w, v1.RelationshipUpdate_OPERATION_TOUCH, forged)
		before := w.snapshotOf("pds-a", al, dv)
		t.Logf("snapshot of A's repos: %d relationships", len(before))
		same := func(when string) {
			t.Helper()
			if d := before.diff(w.snapshotOf("pds-a", al, dv)); d != "" {
				t.Fatalf("%s changed A's repos:\n%s", when, d)
			}
		}

		// pds-b's rebuild, its daemon stopped: a grant bob writes meanwhile
		// arrives through the rebuild alone.
		start := time.Now()
		B.stopDaemon()
		B.apply(bob, create(relC, "v-dave", rel("space", bb+"/b", "viewer", "acct", dv, "")))
		port, err := spicedbtest.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		out := B.mustRun("rebuild", "--exit-when-done", "--takeover", "--http-addr", fmt.Sprintf("127.0.0.1:%d", port),
			"--log-level", logLevel())
		if !strings.Contains(out, "rebuild done") {
			t.Fatalf("no rebuild in pds-b's output:\n%s", tail(out, 3000))
		}
		same("pds-b's rebuild")
		n, _ := w.waitOracle(10*time.Second, forged.String())
		checks(t, "after pds-b's rebuild", chk{"view", id(bb, "b"), dv, true})
		t.Logf("pds-b rebuild --exit-when-done: %v; A unchanged, %d relationships match the oracle", time.Since(start).Round(time.Millisecond), n)

		start = time.Now()
		B.startDaemon()
		B.waitReady()
		// reconcile --fix of one of A's accounts, through pds-b's daemon.
		out = B.mustRun("reconcile", "--fix", "--did", al, "--http-addr", B.httpAddr)
		same("pds-b's reconcile --fix --did " + al)
		if strings.Contains(out, "resynced") {
			t.Fatalf("pds-b's reconcile repaired alice's repo:\n%s", out)
		}
		// The admin API: no token, no resync; with it, A's accounts change nothing.
		if code, body := B.adminResync("", al); code != http.StatusUnauthorized {
			t.Fatalf("admin resync without the token: HTTP %d %s", code, body)
		}
		if code, body := B.adminResync(adminToken, al, dv); code != http.StatusOK {
			t.Fatalf("admin resync of A's accounts on pds-b: HTTP %d %s", code, body)
		}
		same("pds-b's admin resync of alice and dave")
		// reconcile --fix of everything, with drift in bob's repo (B's).
		gone := view.Tuple{ResourceType: view.TypeGroup, ResourceID: id(bb, "friends"), Relation: "direct_member",
			SubjectType: view.TypeAcct, SubjectID: view.EncodeDID(carol.DID)}
		writeRels(t, w, v1.RelationshipUpdate_OPERATION_DELETE, gone)
		out = B.mustRun("reconcile", "--fix", "--http-addr", B.httpAddr)
		if rows := driftRows(out, bb); !slices.Contains(rows, "missing "+gone.String()) || !strings.Contains(out, "resynced 1 repos") {
			t.Fatalf("pds-b's reconcile --fix did not find and repair bob's drift (%s):\n%s", gone, out)
		}
		same("pds-b's reconcile --fix")
		n, _ = w.waitOracle(10*time.Second, forged.String())
		checks(t, "after pds-b's reconcile --fix", chk{"view", id(al, "home"), carol.DID, true})
		t.Logf("pds-b reconcile --fix --did, admin resync, reconcile --fix: %v; A unchanged, %d relationships match the oracle",
			time.Since(start).Round(time.Millisecond), n)

		// One of B's accounts is deleted (admin). alice's and dave's grants
		// to erin are theirs: they stay.
		start = time.Now()
		if err := B.xrpc.DeleteAccount(ctx, B.pds.AdminPassword, erin.DID); err != nil {
			t.Fatal(err)
		}
		B.caughtUp(bob)
		same("erin's deletion on B")
		n, _ = w.waitOracle(10*time.Second, forged.String())
		checks(t, "after erin's deletion",
			chk{"view", id(erin.DID, "e"), dv, false},
			chk{"edit", id(bb, "b"), erin.DID, true},
			chk{"administer", id(al, "proj"), erin.DID, true})
		if got := w.a.relationships(view.TypeSpace, view.TypeGroup, view.TypeLineage); strings.Contains(strings.Join(got, "\n"), view.DIDPrefix(erin.DID)) {
			t.Fatalf("relationships of erin's repo remain after its deletion")
		}
		t.Logf("erin deleted on B: %v; A unchanged, %d relationships match the oracle", time.Since(start).Round(time.Millisecond), n)

		// pds-a's own reconcile finds the forged relationship and repairs it.
		start = time.Now()
		out, code := A.run("reconcile", "--did", al, "--http-addr", A.httpAddr)
		if rows := driftRows(out, al); code != 3 || !slices.Equal(rows, []string{"extra " + forged.String()}) {
			t.Fatalf("pds-a's reconcile of alice: exit %d, want 3 and the forged relationship:\n%s", code, out)
		}
		A.mustRun("reconcile", "--fix", "--did", al, "--http-addr", A.httpAddr)
		n, _ = w.waitOracle(10 * time.Second)
		t.Logf("pds-a reconcile and --fix of alice: %v; %d relationships match the oracle", time.Since(start).Round(time.Millisecond), n)
	}) {
		return
	}

	t.Run("migration", func(t *testing.T) {
		ctx := context.Background()
		store := spice.NewStore(w.client)
		epochBefore, err := store.LoadEpoch(ctx, "pds-a", "")
		if err != nil {
			t.Fatal(err)
		}
		// carol views alice's home through alice's old grant to bob's group.
		smp := startSampler(w, al, chk{"view", id(al, "home"), carol.DID, true})

		start := time.Now()
		moved, err := localpds.Migrate(ctx, A.pds, B.pds, alice, password)
		if err != nil {
			t.Fatal(err)
		}
		B.accounts["alice"] = moved
		took := time.Since(start)
		tb := B.caughtUp(bob)
		st, err := store.LoadRepo(ctx, al, "")
		if err != nil {
			t.Fatal(err)
		}
		if st.Source != "pds-b" {
			t.Fatalf("pds-b applied B's #account active and #sync of alice but did not take the repo over: %+v", st)
		}
		t.Logf("migration A → B: %v; pds-b caught up %v later, owns alice's repo at rev %s", took.Round(time.Millisecond),
			tb.Round(time.Millisecond), st.Rev)
		// B reports the import under a rev of its own (its #sync's rev,
		// getLatestCommit), while its getRepo serves A's last commit.
		if _, importRev, err := B.xrpc.GetLatestCommit(ctx, al); err != nil {
			t.Fatal(err)
		} else if _, err := B.consistentWithin(al, importRev, time.Second); err != nil {
			t.Logf("note: /v1/consistency of B's import rev %s (getLatestCommit, the #sync's rev): %v; pds-b stored rev %s",
				importRev, err, st.Rev)
		}

		// A new grant, written on B: dave views alice's home.
		rev := B.apply(moved, create(relC, "view-dave", rel("space", al+"/home", "viewer", "acct", dv, "")))
		tok, err := B.consistent(al, rev)
		if err != nil {
			t.Fatalf("pds-b: the first write on B (rev %s): %v", rev, err)
		}
		if ok, err := w.a.checkAt(tok, "view", id(al, "home"), dv); err != nil || !ok {
			t.Fatalf("dave does not view alice's home with the token of the write on B (%v)", err)
		}
		smp.add(chk{"view", id(al, "home"), dv, true})

		ta, tb := A.caughtUp(dave), B.caughtUp(bob)
		n, _ := w.waitOracle(10 * time.Second)
		moves := []chk{
			{"view", id(al, "home"), carol.DID, true}, // old records
			{"edit", id(al, "proj"), carol.DID, true},
			{"view", id(al, "home"), dv, true}, // the new one
			{"administer", id(carol.DID, "c"), al, true},
			{"view", id(al, "proj"), dv, true},
		}
		checks(t, "after the migration", moves...)
		afterMove := w.snapshotOf("", al)
		t.Logf("both caught up (A %v, B %v): %d relationships match the oracle; alice's repo holds %d",
			ta.Round(time.Millisecond), tb.Round(time.Millisecond), n, len(afterMove))

		// The old copy is deleted on A: pds-a's #account deleted changes nothing.
		start = time.Now()
		if err := A.pds.DeleteAccount(ctx, alice, password); err != nil {
			t.Fatal(err)
		}
		if _, err := A.xrpc.GetRepoStatus(ctx, al); err == nil {
			t.Fatal("alice still exists on A after its deletion")
		}
		A.caughtUp(dave)
		B.caughtUp(bob)
		if d := afterMove.diff(w.snapshotOf("", al)); d != "" {
			t.Fatalf("pds-a's #account deleted changed alice's repo, owned by pds-b:\n%s", d)
		}
		n, _ = w.waitOracle(10 * time.Second)
		checks(t, "after the deletion on A", moves...)
		t.Logf("alice deleted on A: caught up in %v; %d relationships match the oracle", time.Since(start).Round(time.Millisecond), n)

		samples := smp.stop()
		smp.assert(t, "pds-a", "pds-b")

		// The repo's bookkeeping is B's: its source, the rev of its write
		// on B, an active status, nothing else.
		_, headRev, err := B.xrpc.GetLatestCommit(ctx, al)
		if err != nil {
			t.Fatal(err)
		}
		var repo []string
		for _, r := range w.a.relationships(view.TypeRepo) {
			if strings.HasPrefix(r, view.TypeRepo+":"+view.RepoID(al)+"#") {
				repo = append(repo, r)
			}
		}
		src, rv := view.SourceTuple(al, "pds-b").String(), view.RevTuple(al, headRev).String()
		active := strings.TrimSuffix(view.StatusTuple(al, "active", 0).String(), "0") // any seq
		if len(repo) != 3 || !slices.Contains(repo, src) || !slices.Contains(repo, rv) || !strings.HasPrefix(repo[2], active) {
			t.Fatalf("alice's repo bookkeeping:\n  %s\nwant %s, %s and an active status", strings.Join(repo, "\n  "), src, rv)
		}
		epochAfter, err := store.LoadEpoch(ctx, "pds-a", "")
		if err != nil {
			t.Fatal(err)
		}
		if epochAfter != epochBefore+1 {
			t.Fatalf("pds-a's epoch went from %d to %d, want one move (one claim)", epochBefore, epochAfter)
		}
		if !A.consumer.Running() || !B.consumer.Running() {
			t.Fatalf("a daemon exited: pds-a running %v, pds-b running %v", A.consumer.Running(), B.consumer.Running())
		}
		t.Logf("alice's repo: %v; pds-a's epoch %d → %d; pds-a pipeline restarts %d; %d check samples during the move",
			repo, epochBefore, epochAfter, A.status().PipelineRestarts, samples)
	})
	t.Logf("total %v", time.Since(t0).Round(time.Millisecond))
}

// chk is a permission question and its answer.
type chk struct {
	perm, space, who string
	want             bool
}

// driftRows are the rows reconcile printed for did: "kind relationship".
func driftRows(out, did string) []string {
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == did {
			rows = append(rows, strings.Join(f[1:], " "))
		}
	}
	return rows
}

// writeRels writes relationships behind the consumers' backs.
func writeRels(t testing.TB, w *world, op v1.RelationshipUpdate_Operation, ts ...view.Tuple) {
	t.Helper()
	var ups []*v1.RelationshipUpdate
	for _, tu := range ts {
		ups = append(ups, &v1.RelationshipUpdate{Operation: op, Relationship: w.client.ToV1(tu)})
	}
	if _, err := w.client.API().WriteRelationships(context.Background(), &v1.WriteRelationshipsRequest{Updates: ups}); err != nil {
		t.Fatal(err)
	}
}

// sampler asks SpiceDB permission questions in a loop while an account
// moves, and reads the repo's owner and status at the exact snapshot each
// answer was computed at.
type sampler struct {
	w    *world
	did  string
	mu   sync.Mutex
	chks []chk
	quit chan struct{}
	done chan struct{}
	n    atomic.Int64
	bad  []string // answers DESIGN §4 does not allow
	gaps []string // denials in the allowed window
	err  error
}

func startSampler(w *world, did string, c chk) *sampler {
	s := &sampler{w: w, did: did, chks: []chk{c}, quit: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	return s
}

// add asks one more question from now on.
func (s *sampler) add(c chk) {
	s.mu.Lock()
	s.chks = append(s.chks, c)
	s.mu.Unlock()
}

func (s *sampler) stop() int64 {
	close(s.quit)
	<-s.done
	return s.n.Load()
}

func (s *sampler) loop() {
	defer close(s.done)
	ctx := context.Background()
	api, ns := s.w.client.API(), s.w.client.Namespace()
	seenNew := false
	start := time.Now()
	for {
		select {
		case <-s.quit:
			return
		case <-time.After(10 * time.Millisecond):
		}
		s.mu.Lock()
		chks := append([]chk(nil), s.chks...)
		s.mu.Unlock()
		var at *v1.ZedToken
		var denied []string
		for _, c := range chks {
			cons := spice.Consistency("")
			if at != nil { // every question of a sample at one snapshot
				cons = &v1.Consistency{Requirement: &v1.Consistency_AtExactSnapshot{AtExactSnapshot: at}}
			}
			resp, err := api.CheckPermission(ctx, &v1.CheckPermissionRequest{Consistency: cons,
				Resource: &v1.ObjectReference{ObjectType: ns.Type(view.TypeSpace), ObjectId: c.space}, Permission: c.perm,
				Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: ns.Type(view.TypeAcct),
					ObjectId: view.EncodeDID(c.who)}}})
			if err != nil {
				s.err = err
				return
			}
			if at == nil {
				at = resp.GetCheckedAt()
			}
			if got := resp.GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION; got != c.want {
				denied = append(denied, c.perm+" "+c.space+" "+c.who)
			}
		}
		source, status, err := s.repoAt(ctx, at)
		if err != nil {
			s.err = err
			return
		}
		s.n.Add(1)
		when := time.Since(start).Round(time.Millisecond)
		if source == "pds-b" {
			seenNew = true
		} else if seenNew {
			s.bad = append(s.bad, when.String()+": the repo's source went back to "+source)
		}
		if len(denied) == 0 {
			continue
		}
		line := when.String() + ": " + strings.Join(denied, ", ") + " answered wrong with source " + source + ", status " + status
		if source == "pds-a" && strings.HasPrefix(status, "deactivated-") {
			s.gaps = append(s.gaps, line) // A's deactivation applied before B's claim
		} else {
			s.bad = append(s.bad, line)
		}
	}
}

// repoAt reads the repo's source and status at the exact snapshot at.
func (s *sampler) repoAt(ctx context.Context, at *v1.ZedToken) (source, status string, err error) {
	stream, err := s.w.client.API().ReadRelationships(ctx, &v1.ReadRelationshipsRequest{
		Consistency: &v1.Consistency{Requirement: &v1.Consistency_AtExactSnapshot{AtExactSnapshot: at}},
		RelationshipFilter: s.w.client.Namespace().Filter(&v1.RelationshipFilter{ResourceType: view.TypeRepo,
			OptionalResourceId: view.RepoID(s.did)})})
	if err != nil {
		return "", "", err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return source, status, nil
		}
		if err != nil {
			return "", "", err
		}
		t := s.w.client.FromV1(resp.GetRelationship())
		switch t.Relation {
		case view.RelSource:
			source = t.SubjectID
		case view.RelStatus:
			status = t.SubjectID
		}
	}
}

// assert fails the test on any answer DESIGN §4 does not allow, and logs
// the denials it allows.
func (s *sampler) assert(t *testing.T, from, to string) {
	t.Helper()
	if s.err != nil {
		t.Fatalf("sampling checks: %v", s.err)
	}
	if len(s.gaps) > 0 {
		t.Logf("%d of %d samples denied while %s's deactivation was applied and %s's claim was not (DESIGN §4 allows it):\n  %s",
			len(s.gaps), s.n.Load(), from, to, strings.Join(s.gaps, "\n  "))
	}
	if len(s.bad) > 0 {
		t.Fatalf("%d of %d samples answered wrong outside that window:\n  %s", len(s.bad), s.n.Load(), strings.Join(s.bad, "\n  "))
	}
}
