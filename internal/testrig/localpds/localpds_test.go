//go:build e2e

package localpds_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
)

const (
	spaceColl  = "com.example.space.space"
	memberColl = "com.example.space.member"
	itemColl   = "com.example.space.item"
	password   = "hunter2-hunter2"
)

// commitRev returns a predicate that stops at the commit with the given rev.
func commitRev(rev string) func(fhEvent) bool {
	return func(e fhEvent) bool { return e.Kind == "commit" && e.Rev == rev }
}

func mustXRPCError(t *testing.T, err error, what string) *localpds.XRPCError {
	t.Helper()
	var xe *localpds.XRPCError
	if !errors.As(err, &xe) {
		t.Fatalf("%s: want an XRPC error, got %v", what, err)
	}
	t.Logf("%s: %v", what, err)
	return xe
}

func paths(recs []localpds.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.URI[strings.LastIndex(r.URI, "/")+1:])
	}
	slices.Sort(out)
	return out
}

func TestLocalPDS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	t0 := time.Now()
	if err := localpds.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("setup: %v", time.Since(t0))

	t0 = time.Now()
	p, err := localpds.Start(ctx, localpds.Options{Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(p.DataDir); !os.IsNotExist(err) {
			t.Errorf("data dir %s not removed by Stop: %v", p.DataDir, err)
		}
	})
	t.Logf("start: %v: PDS %s PLC %s data %s", time.Since(t0), p.URL, p.PLCURL, p.DataDir)
	c := p.Client()

	// The steps run in order and depend on each other: once one fails, the
	// rest do not run.
	step := func(name string, fn func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, fn) {
			t.FailNow()
		}
	}

	// State shared between steps, set by the step that creates it.
	var (
		alice, bob, carol, erin  localpds.Session
		tmpRKey, s1URI           string
		awRev, itemsRev, markRev string
		before                   []fhEvent // replay from cursor 0 before the restart
		after                    localpds.RecordRef
	)

	// checkSurvived checks that repos and the firehose replay are as they
	// were before the restart.
	checkSurvived := func(t *testing.T, stage string) {
		t.Helper()
		if _, rev, err := c.GetLatestCommit(ctx, alice.DID); err != nil || rev < markRev {
			t.Fatalf("%s: alice head rev %s, %v; want >= %s", stage, rev, err, markRev)
		}
		all, err := c.ListAllRecords(ctx, alice.DID, itemColl)
		if err != nil || len(all) < 151 {
			t.Fatalf("%s: alice items: %d, %v", stage, len(all), err)
		}
		members, err := c.ListAllRecords(ctx, bob.DID, memberColl)
		if got := paths(members); err != nil || !reflect.DeepEqual(got, []string{"m0", "m1", "m2"}) {
			t.Fatalf("%s: bob's members = %v, %v", stage, got, err)
		}
		evs, err := readFirehose(ctx, p.SubscribeReposURL(0), func(e fhEvent) bool { return e.Seq >= before[len(before)-1].Seq })
		if err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		if len(evs) != len(before) {
			t.Fatalf("%s: replay has %d events, want %d", stage, len(evs), len(before))
		}
		for i := range evs {
			if evs[i].String() != before[i].String() {
				t.Fatalf("%s: replay event %d = %v, want %v", stage, i, evs[i], before[i])
			}
		}
	}

	step("accounts", func(t *testing.T) {
		var err error
		alice, err = c.CreateAccount(ctx, "alice.test", "alice@example.com", password)
		if err != nil {
			t.Fatal(err)
		}
		bob, err = c.CreateAccount(ctx, "bob.test", "bob@example.com", password)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(alice.DID, "did:plc:") || alice.Handle != "alice.test" || alice.AccessJwt == "" || alice.RefreshJwt == "" {
			t.Fatalf("alice session = %+v", alice)
		}
		_, err = c.CreateAccount(ctx, "u1.test", "u1@example.com", password)
		mustXRPCError(t, err, "short handle")
	})

	// createRecord / putRecord / deleteRecord
	step("records", func(t *testing.T) {
		s1, err := c.CreateRecord(ctx, alice, spaceColl, "s1", map[string]any{"$type": spaceColl, "name": "Space 1"})
		if err != nil {
			t.Fatal(err)
		}
		if s1.URI != "at://"+alice.DID+"/"+spaceColl+"/s1" || s1.CID == "" || s1.Rev == "" || s1.CommitCID == "" {
			t.Fatalf("createRecord = %+v", s1)
		}
		t.Logf("createRecord: %+v", s1)
		headCID, headRev, err := c.GetLatestCommit(ctx, alice.DID)
		if err != nil {
			t.Fatal(err)
		}
		if headRev != s1.Rev || headCID != s1.CommitCID {
			t.Fatalf("getLatestCommit = %s %s, want %s %s", headCID, headRev, s1.CommitCID, s1.Rev)
		}
		tmp, err := c.CreateRecord(ctx, alice, spaceColl, "", map[string]any{"name": "no rkey, no $type"})
		if err != nil {
			t.Fatal(err)
		}
		tmpRKey = tmp.URI[strings.LastIndex(tmp.URI, "/")+1:]
		if _, err := syntax.ParseTID(tmpRKey); err != nil {
			t.Fatalf("generated rkey %q: %v", tmpRKey, err)
		}
		got, err := c.GetRecord(ctx, alice.DID, spaceColl, tmpRKey)
		if err != nil {
			t.Fatal(err)
		}
		if got.Value["$type"] != spaceColl || got.CID != tmp.CID {
			t.Fatalf("getRecord = %+v", got)
		}

		put, err := c.PutRecord(ctx, alice, spaceColl, "s1", map[string]any{"$type": spaceColl, "name": "Space 1 renamed"})
		if err != nil {
			t.Fatal(err)
		}
		if put.Rev == "" || put.Rev <= s1.Rev || put.CID == s1.CID {
			t.Fatalf("putRecord = %+v (after %+v)", put, s1)
		}
		same, err := c.PutRecord(ctx, alice, spaceColl, "s1", map[string]any{"$type": spaceColl, "name": "Space 1 renamed"})
		if err != nil {
			t.Fatal(err)
		}
		if same.Rev != "" || same.CID != put.CID {
			t.Fatalf("no-op putRecord = %+v, want no rev", same)
		}
		delRev, err := c.DeleteRecord(ctx, alice, spaceColl, tmpRKey)
		if err != nil {
			t.Fatal(err)
		}
		if delRev <= put.Rev {
			t.Fatalf("deleteRecord rev %q, want > %q", delRev, put.Rev)
		}
		if noRev, err := c.DeleteRecord(ctx, alice, spaceColl, "nope"); err != nil || noRev != "" {
			t.Fatalf("deleteRecord of a missing record = %q, %v; want no-op", noRev, err)
		}
		_, err = c.GetRecord(ctx, alice.DID, spaceColl, tmpRKey)
		if xe := mustXRPCError(t, err, "getRecord deleted"); xe.Name != "RecordNotFound" || xe.Status != 400 {
			t.Fatalf("getRecord deleted: %+v", xe)
		}
		_, err = c.CreateRecord(ctx, alice, memberColl, "", map[string]any{"$type": spaceColl})
		mustXRPCError(t, err, "createRecord with wrong $type")
	})

	// 3 ops, one commit
	step("applyWrites", func(t *testing.T) {
		if _, err := c.CreateRecord(ctx, bob, memberColl, "m0", map[string]any{"space": "old"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateRecord(ctx, bob, memberColl, "m9", map[string]any{"space": "doomed"}); err != nil {
			t.Fatal(err)
		}
		s1URI = "at://" + alice.DID + "/" + spaceColl + "/s1"
		var (
			results []localpds.WriteResult
			err     error
		)
		awRev, results, err = c.ApplyWrites(ctx, bob, []localpds.Write{
			{Action: "create", Collection: memberColl, RKey: "m1", Value: map[string]any{"$type": memberColl, "space": s1URI}},
			{Action: "update", Collection: memberColl, RKey: "m0", Value: map[string]any{"$type": memberColl, "space": s1URI}},
			{Action: "delete", Collection: memberColl, RKey: "m9"},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("applyWrites: rev %s results %+v", awRev, results)
		wantTypes := []string{"com.atproto.repo.applyWrites#createResult", "com.atproto.repo.applyWrites#updateResult", "com.atproto.repo.applyWrites#deleteResult"}
		if len(results) != 3 || awRev == "" {
			t.Fatalf("applyWrites = %q %+v", awRev, results)
		}
		for i, r := range results {
			if r.Type != wantTypes[i] || (i < 2) != (r.URI != "" && r.CID != "") {
				t.Fatalf("applyWrites result %d = %+v", i, r)
			}
		}
		if _, _, err := c.ApplyWrites(ctx, bob, []localpds.Write{{Action: "upsert"}}); err == nil {
			t.Fatal("applyWrites with a bad action: no error")
		}
	})

	// paged
	step("listRecords", func(t *testing.T) {
		var items []localpds.Write
		for i := range 150 {
			items = append(items, localpds.Write{Action: "create", Collection: itemColl, RKey: fmt.Sprintf("i%03d", i), Value: map[string]any{"n": i}})
		}
		var err error
		itemsRev, _, err = c.ApplyWrites(ctx, alice, items)
		if err != nil {
			t.Fatal(err)
		}
		page, cursor, err := c.ListRecords(ctx, alice.DID, itemColl, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(page) != 100 || cursor == "" {
			t.Fatalf("listRecords page 1: %d records, cursor %q", len(page), cursor)
		}
		all, err := c.ListAllRecords(ctx, alice.DID, itemColl)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 150 {
			t.Fatalf("listAllRecords: %d records, want 150", len(all))
		}
		members, err := c.ListAllRecords(ctx, bob.DID, memberColl)
		if err != nil {
			t.Fatal(err)
		}
		if got := paths(members); !reflect.DeepEqual(got, []string{"m0", "m1"}) {
			t.Fatalf("bob's members = %v", got)
		}
	})

	// from cursor 0
	step("firehose replay", func(t *testing.T) {
		evs, err := readFirehose(ctx, p.SubscribeReposURL(0), commitRev(itemsRev))
		if err != nil {
			t.Fatal(err)
		}
		var ops []string
		kinds := map[string]int{}
		for _, e := range evs {
			kinds[e.Kind]++
			if len(e.Ops) == 1 { // the applyWrites batches are checked below
				ops = append(ops, e.Ops...)
			}
		}
		wantOps := []string{
			"create " + spaceColl + "/s1",
			"create " + spaceColl + "/" + tmpRKey,
			"update " + spaceColl + "/s1",
			"delete " + spaceColl + "/" + tmpRKey,
			"create " + memberColl + "/m0",
			"create " + memberColl + "/m9",
		}
		if !reflect.DeepEqual(ops, wantOps) {
			t.Fatalf("firehose single ops = %v, want %v", ops, wantOps)
		}
		i := slices.IndexFunc(evs, commitRev(awRev))
		if i < 0 {
			t.Fatalf("no commit for applyWrites rev %s", awRev)
		}
		aw := evs[i]
		if want := []string{"create " + memberColl + "/m1", "update " + memberColl + "/m0", "delete " + memberColl + "/m9"}; aw.DID != bob.DID || !reflect.DeepEqual(aw.Ops, want) {
			t.Fatalf("applyWrites commit = %v, want ops %v", aw, want)
		}
		if rec := aw.Records[memberColl+"/m1"]; rec["space"] != s1URI || rec["$type"] != memberColl {
			t.Fatalf("applyWrites m1 record = %v", rec)
		}
		// per account: #identity, #account, an empty #commit and #sync
		if kinds["identity"] != 2 || kinds["account"] != 2 || kinds["sync"] != 2 {
			t.Fatalf("event kinds = %v", kinds)
		}
		last := evs[len(evs)-1]
		if len(last.Ops) != 150 {
			t.Fatalf("last commit has %d ops, want 150", len(last.Ops))
		}
		t.Logf("firehose replay: %d events up to seq %d: %v", len(evs), last.Seq, kinds)
	})

	step("deactivate and activate", func(t *testing.T) {
		if err := c.DeactivateAccount(ctx, bob); err != nil {
			t.Fatal(err)
		}
		st, err := c.GetRepoStatus(ctx, bob.DID)
		if err != nil {
			t.Fatal(err)
		}
		if st.Active || st.Status != "deactivated" {
			t.Fatalf("deactivated repo status = %+v", st)
		}
		_, err = c.CreateRecord(ctx, bob, memberColl, "", map[string]any{"space": "x"})
		mustXRPCError(t, err, "write while deactivated")
		if err := c.ActivateAccount(ctx, bob); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateRecord(ctx, bob, memberColl, "m2", map[string]any{"space": "after activation"}); err != nil {
			t.Fatal(err)
		}
	})

	step("takedown", func(t *testing.T) {
		var err error
		carol, err = c.CreateAccount(ctx, "carol.test", "carol@example.com", password)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Takedown(ctx, p.AdminPassword, carol.DID, true); err != nil {
			t.Fatal(err)
		}
		if st, err := c.GetRepoStatus(ctx, carol.DID); err != nil || st.Active || st.Status != "takendown" {
			t.Fatalf("taken-down repo status = %+v, %v", st, err)
		}
		_, err = c.CreateRecord(ctx, carol, spaceColl, "", map[string]any{"name": "x"})
		mustXRPCError(t, err, "write while taken down")
		if err := c.Takedown(ctx, p.AdminPassword, carol.DID, false); err != nil {
			t.Fatal(err)
		}
		if st, err := c.GetRepoStatus(ctx, carol.DID); err != nil || !st.Active {
			t.Fatalf("restored repo status = %+v, %v", st, err)
		}
		err = c.Takedown(ctx, "wrong", carol.DID, true)
		if xe := mustXRPCError(t, err, "takedown with a wrong admin password"); xe.Status != 401 {
			t.Fatalf("wrong admin password: %+v", xe)
		}
	})

	step("delete account", func(t *testing.T) {
		dave, err := c.CreateAccount(ctx, "dave.test", "dave@example.com", password)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateRecord(ctx, dave, spaceColl, "d1", map[string]any{"name": "gone soon"}); err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteAccount(ctx, p.AdminPassword, dave.DID); err != nil {
			t.Fatal(err)
		}
		_, err = c.GetRepoStatus(ctx, dave.DID)
		mustXRPCError(t, err, "repo status of a deleted account")
		_, err = c.CreateSession(ctx, "dave.test", password)
		mustXRPCError(t, err, "login to a deleted account")

		// The account events, in order, in a replay.
		markRev, _, err = c.ApplyWrites(ctx, alice, []localpds.Write{{Action: "create", Collection: itemColl, RKey: "mark1", Value: map[string]any{}}})
		if err != nil {
			t.Fatal(err)
		}
		evs, err := readFirehose(ctx, p.SubscribeReposURL(0), commitRev(markRev))
		if err != nil {
			t.Fatal(err)
		}
		var acct []string
		for _, e := range evs {
			if e.Kind == "account" {
				name := map[string]string{alice.DID: "alice", bob.DID: "bob", carol.DID: "carol", dave.DID: "dave"}[e.DID]
				acct = append(acct, fmt.Sprintf("%s %v %s", name, e.Active, e.Status))
			}
			if e.DID == dave.DID && e.Kind != "account" {
				t.Errorf("replay still has a %s event of the deleted account", e)
			}
		}
		wantAcct := []string{"alice true ", "bob true ", "bob false deactivated", "bob true ", "carol true ", "carol false takendown", "carol true ", "dave false deleted"}
		if !reflect.DeepEqual(acct, wantAcct) {
			t.Fatalf("#account events = %q, want %q", acct, wantAcct)
		}
		before = evs
		t.Logf("replay before restart: %d events, last seq %d", len(before), before[len(before)-1].Seq)
	})

	// same port, same data, same PLC
	step("restart", func(t *testing.T) {
		url, oldPID := p.URL, p.PID()
		t0 := time.Now()
		if err := p.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("restart: %v", time.Since(t0))
		if p.URL != url || p.PID() == oldPID {
			t.Fatalf("after restart: URL %s (was %s), pid %d (was %d)", p.URL, url, p.PID(), oldPID)
		}
		checkSurvived(t, "after restart")
	})

	// Old sessions, login, account state changes (need the PLC), new accounts
	// and new writes, seen live and in a replay.
	step("after restart", func(t *testing.T) {
		live := make(chan []fhEvent, 1)
		liveErr := make(chan error, 1)
		go func() {
			evs, err := readFirehose(ctx, p.SubscribeReposURL(-1), func(e fhEvent) bool {
				return e.Kind == "commit" && len(e.Ops) == 1 && e.Ops[0] == "create "+spaceColl+"/after-restart"
			})
			live <- evs
			liveErr <- err
		}()
		time.Sleep(300 * time.Millisecond) // let the live subscription connect
		if _, err := c.CreateSession(ctx, "alice.test", password); err != nil {
			t.Fatal(err)
		}
		if err := c.DeactivateAccount(ctx, bob); err != nil {
			t.Fatal(err)
		}
		if err := c.ActivateAccount(ctx, bob); err != nil {
			t.Fatal(err)
		}
		var err error
		erin, err = c.CreateAccount(ctx, "erin.test", "erin@example.com", password)
		if err != nil {
			t.Fatal(err)
		}
		after, err = c.CreateRecord(ctx, alice, spaceColl, "after-restart", map[string]any{"name": "after restart"})
		if err != nil {
			t.Fatal(err)
		}
		liveEvs, err := <-live, <-liveErr
		if err != nil {
			t.Fatal(err)
		}
		var liveKinds []string
		for _, e := range liveEvs {
			liveKinds = append(liveKinds, e.Kind)
			if e.Seq <= before[len(before)-1].Seq {
				t.Fatalf("live event %v has a seq from before the restart", e)
			}
		}
		t.Logf("live events after restart: %v", liveKinds)
		if liveEvs[len(liveEvs)-1].Rev != after.Rev || !slices.ContainsFunc(liveEvs, func(e fhEvent) bool { return e.DID == erin.DID }) {
			t.Fatalf("live events after restart = %v", liveEvs)
		}
	})

	// crash: SIGKILL, then restart
	step("kill and restart", func(t *testing.T) {
		p.Kill()
		if _, _, err := c.GetLatestCommit(ctx, alice.DID); err == nil {
			t.Fatal("PDS still answers after Kill")
		}
		t0 := time.Now()
		if err := p.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("restart after kill: %v", time.Since(t0))
		checkSurvived(t, "after kill")
		if _, rev, err := c.GetLatestCommit(ctx, alice.DID); err != nil || rev != after.Rev {
			t.Fatalf("after kill: alice head rev %s, %v; want %s", rev, err, after.Rev)
		}
		if _, err := c.CreateRecord(ctx, erin, spaceColl, "e1", map[string]any{"name": "after kill"}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestOptions checks a caller-owned data dir (kept by Stop, reused by the
// next Start), the backfill window, the subscription buffer and the log file.
func TestOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dataDir := t.TempDir()
	logFile := dataDir + ".log"
	t.Cleanup(func() { os.Remove(logFile) })
	opts := localpds.Options{
		DataDir:               dataDir,
		BackfillLimit:         1500 * time.Millisecond,
		MaxSubscriptionBuffer: 50,
		LogFile:               logFile,
	}
	p, err := localpds.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	c := p.Client()
	frank, err := c.CreateAccount(ctx, "frank.test", "frank@example.com", password)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the account's events leave the backfill window
	ref, err := c.CreateRecord(ctx, frank, spaceColl, "f1", map[string]any{"name": "f1"})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := readFirehose(ctx, p.SubscribeReposURL(0), commitRev(ref.Rev))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Kind != "info" || !strings.HasPrefix(evs[0].Status, "OutdatedCursor") {
		t.Fatalf("replay outside the backfill window = %v, want #info OutdatedCursor then the commit", evs)
	}
	url := p.URL
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dataDir + "/local-pds.json"); err != nil {
		t.Fatalf("Stop removed a caller's data dir: %v", err)
	}
	if st, err := os.Stat(logFile); err != nil || st.Size() == 0 {
		t.Fatalf("log file %s: %v", logFile, err)
	}

	// A new Start on the same dir: same port and secrets (the old access
	// token still works), repos and firehose are still there. The PLC is a
	// new one, so the old DIDs do not resolve any more (use Restart instead).
	p2, err := localpds.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Stop()
	if p2.URL != url {
		t.Fatalf("second Start on %s, want %s", p2.URL, url)
	}
	c = p2.Client()
	if _, err := c.GetRecord(ctx, frank.DID, spaceColl, "f1"); err != nil {
		t.Fatal(err)
	}
	ref2, err := c.CreateRecord(ctx, frank, spaceColl, "f2", map[string]any{"name": "f2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readFirehose(ctx, p2.SubscribeReposURL(0), commitRev(ref2.Rev)); err != nil {
		t.Fatal(err)
	}
}
