//go:build e2e

package localpds_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/ipfs/go-cid"

	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
)

const (
	spaceSpaceColl = "com.atproto.space.space"
	fileColl       = "com.example.space.file"
)

// signer names the key (of keys) that signed an event's commit block, or "-".
func signer(e fhEvent, keys map[string]atcrypto.PublicKey) string {
	if e.Commit == nil {
		return "-"
	}
	for name, k := range keys {
		if e.Commit.VerifySignature(k) == nil {
			return name
		}
	}
	return "none"
}

// describe renders an event of the migrated account for the logs and the
// expected sequences: kind and fields, with revs replaced by names.
func describe(e fhEvent, revs map[string]string, keys map[string]atcrypto.PublicKey) string {
	rev := func(r string) string {
		if n, ok := revs[r]; ok {
			return n
		}
		return "rev?" + r
	}
	switch e.Kind {
	case "identity":
		return fmt.Sprintf("identity handle=%q", e.Handle)
	case "account":
		return fmt.Sprintf("account active=%v status=%q", e.Active, e.Status)
	case "sync":
		return fmt.Sprintf("sync rev=%s block.rev=%s blocks=%d signer=%s", rev(e.Rev), rev(e.Commit.Rev), e.Blocks, signer(e, keys))
	case "commit":
		since := "-"
		if e.Since != "" {
			since = rev(e.Since)
		}
		return fmt.Sprintf("commit rev=%s block.rev=%s since=%s prevData=%v ops=%d signer=%s",
			rev(e.Rev), rev(e.Commit.Rev), since, e.PrevData != "", len(e.Ops), signer(e, keys))
	}
	return e.Kind + " " + e.Status
}

// logEvents logs the full event list of a firehose.
func logEvents(t *testing.T, name string, evs []fhEvent) {
	t.Helper()
	t.Logf("%s firehose, %d events:", name, len(evs))
	for _, e := range evs {
		st := ""
		if e.Kind == "account" {
			st = fmt.Sprintf(" active=%v status=%q", e.Active, e.Status)
		}
		crev := ""
		if e.Commit != nil {
			crev = fmt.Sprintf(" block.rev=%s blocks=%d commit=%s", e.Commit.Rev, e.Blocks, e.CommitCID)
		}
		t.Logf("  %s seq=%d %-8s time=%s did=%s%s rev=%s since=%s prevData=%v ops=%d handle=%q%s",
			name, e.Seq, e.Kind, e.Time, e.DID, st, e.Rev, e.Since, e.PrevData != "", len(e.Ops), e.Handle, crev)
	}
}

// signingKey returns the current repo signing key of did.
func signingKey(ctx context.Context, t *testing.T, p *localpds.PDS, did string) atcrypto.PublicKey {
	t.Helper()
	d, err := p.PLCData(ctx, did)
	if err != nil {
		t.Fatal(err)
	}
	k, err := atcrypto.ParsePublicDIDKey(d.SigningKey())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ofDID returns the events of did.
func ofDID(evs []fhEvent, did string) []fhEvent {
	var out []fhEvent
	for _, e := range evs {
		if e.DID == did {
			out = append(out, e)
		}
	}
	return out
}

// recordPaths lists the collection/rkey paths of a CAR export.
func recordPaths(ctx context.Context, t *testing.T, carBytes []byte) (*repo.Commit, []string) {
	t.Helper()
	commit, r, err := repo.LoadRepoFromCAR(ctx, bytes.NewReader(carBytes))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	err = r.MST.Walk(func(key []byte, _ cid.Cid) error {
		out = append(out, string(key))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return commit, out
}

func TestMigrate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Two PDSs on one PLC.
	t0 := time.Now()
	a, err := localpds.Start(ctx, localpds.Options{Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	b, err := localpds.Start(ctx, localpds.Options{SharePLC: a, Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	t.Logf("start A and B: %v", time.Since(t0))
	t.Logf("A: %s public %s service DID %s data %s", a.URL, a.PublicURL, a.ServiceDID, a.DataDir)
	t.Logf("B: %s public %s service DID %s data %s", b.URL, b.PublicURL, b.ServiceDID, b.DataDir)
	t.Logf("PLC: %s", a.PLCURL)
	if b.PLCURL != a.PLCURL || a.ServiceDID == b.ServiceDID || a.PublicURL == b.PublicURL {
		t.Fatalf("A and B: PLC %s/%s, service DIDs %s/%s, public URLs %s/%s", a.PLCURL, b.PLCURL, a.ServiceDID, b.ServiceDID, a.PublicURL, b.PublicURL)
	}
	for _, p := range []*localpds.PDS{a, b} {
		port := p.URL[strings.LastIndexByte(p.URL, ':')+1:]
		if p.PublicURL != "http://localhost:"+port || p.ServiceDID != "did:web:localhost%3A"+port {
			t.Fatalf("PDS %s: public URL %s, service DID %s", p.URL, p.PublicURL, p.ServiceDID)
		}
	}
	ac, bc := a.Client(), b.Client()

	// The account on A, with a space, a relation and a file with a blob.
	alice, err := ac.CreateAccount(ctx, "alice.test", "alice@example.com", password)
	if err != nil {
		t.Fatal(err)
	}
	space, err := ac.CreateRecord(ctx, alice, spaceSpaceColl, "s1", map[string]any{"name": "Space 1"})
	if err != nil {
		t.Fatal(err)
	}
	member, err := ac.CreateRecord(ctx, alice, memberColl, "m1", map[string]any{"space": space.URI, "subject": alice.DID})
	if err != nil {
		t.Fatal(err)
	}
	blob, err := ac.UploadBlob(ctx, alice, "text/plain", []byte("hello from A"))
	if err != nil {
		t.Fatal(err)
	}
	file, err := ac.CreateRecord(ctx, alice, fileColl, "f1", map[string]any{"space": space.URI, "data": blob})
	if err != nil {
		t.Fatal(err)
	}
	before, err := a.PLCData(ctx, alice.DID)
	if err != nil {
		t.Fatal(err)
	}
	if before.PDSEndpoint() != a.PublicURL {
		t.Fatalf("DID document before the migration points at %s, want A %s", before.PDSEndpoint(), a.PublicURL)
	}
	keyA := signingKey(ctx, t, a, alice.DID)

	// Both firehoses from cursor 0, live through the migration. A's reader
	// stops at the deletion, B's at the first write after the migration.
	const afterRKey = "after-migration"
	var (
		wg              sync.WaitGroup
		evsA, evsB      []fhEvent
		errA, errB      error
		firehoseStarted = time.Now()
		deletedOnA      = func(e fhEvent) bool { return e.Kind == "account" && e.DID == alice.DID && e.Status == "deleted" }
		writtenAfterOnB = func(e fhEvent) bool {
			return e.Kind == "commit" && slices.Contains(e.Ops, "create "+memberColl+"/"+afterRKey)
		}
	)
	// deleteAccount deletes the account's sequenced events but the
	// tombstone, so a subscriber that has not read A's #account
	// deactivated by then never sees it (seen on a slow CI machine: A's
	// stream went from seq 7 to 9). The deletion waits until it was read.
	deactivatedRead := make(chan struct{})
	var deactivatedOnce sync.Once
	stopA := func(e fhEvent) bool {
		if e.Kind == "account" && e.DID == alice.DID && e.Status == "deactivated" {
			deactivatedOnce.Do(func() { close(deactivatedRead) })
		}
		return deletedOnA(e)
	}
	wg.Add(2)
	go func() { defer wg.Done(); evsA, errA = readFirehose(ctx, a.SubscribeReposURL(0), stopA) }()
	go func() { defer wg.Done(); evsB, errB = readFirehose(ctx, b.SubscribeReposURL(0), writtenAfterOnB) }()

	t0 = time.Now()
	moved, err := localpds.Migrate(ctx, a, b, alice, password)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	t.Logf("migration A -> B: %v", took)
	if moved.DID != alice.DID || moved.Handle != alice.Handle || moved.AccessJwt == "" {
		t.Fatalf("session on B = %+v", moved)
	}

	// Until the account writes on B, B serves A's last commit, signed with
	// A's key, under a rev of its own (the import's).
	keyB := signingKey(ctx, t, b, alice.DID)
	importCID, importRev, err := bc.GetLatestCommit(ctx, alice.DID)
	if err != nil {
		t.Fatal(err)
	}
	carB, err := bc.GetRepo(ctx, alice.DID)
	if err != nil {
		t.Fatal(err)
	}
	headB, pathsB := recordPaths(ctx, t, carB)
	t.Logf("B after the migration, before a write: getLatestCommit %s rev %s; getRepo head rev %s, %v", importCID, importRev, headB.Rev, pathsB)
	if importCID != file.CommitCID || importRev <= file.Rev || headB.Rev != file.Rev || headB.VerifySignature(keyA) != nil || headB.VerifySignature(keyB) == nil {
		t.Fatalf("B's head before a write: commit %s rev %s, block rev %s; want A's last commit %s (rev %s, signed by A's key) under a newer rev",
			importCID, importRev, headB.Rev, file.CommitCID, file.Rev)
	}
	if st, err := bc.GetRepoStatus(ctx, alice.DID); err != nil || !st.Active || st.Rev != importRev {
		t.Fatalf("B's repo status after the migration = %+v, %v", st, err)
	}

	after, err := bc.CreateRecord(ctx, moved, memberColl, afterRKey, map[string]any{"space": space.URI, "subject": "did:plc:someoneelse"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ac.CreateRecord(ctx, alice, memberColl, "late", map[string]any{"space": space.URI})
	if xe := mustXRPCError(t, err, "write on A after the migration"); xe.Name != "AccountDeactivated" {
		t.Fatalf("write on A after the migration: %+v", xe)
	}
	if st, err := ac.GetRepoStatus(ctx, alice.DID); err != nil || st.Active || st.Status != "deactivated" {
		t.Fatalf("A's repo status after the migration = %+v, %v", st, err)
	}
	_, err = ac.GetRepo(ctx, alice.DID)
	if xe := mustXRPCError(t, err, "getRepo on A after the migration"); xe.Name != "RepoDeactivated" {
		t.Fatalf("getRepo on A after the migration: %+v", xe)
	}

	select {
	case <-deactivatedRead:
	case <-time.After(30 * time.Second):
		t.Fatal("A's #account deactivated was not streamed within 30 s")
	}
	t0 = time.Now()
	if err := a.DeleteAccount(ctx, alice, password); err != nil {
		t.Fatal(err)
	}
	t.Logf("delete on A: %v", time.Since(t0))
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("firehoses: A: %v; B: %v", errA, errB)
	}
	t.Logf("firehoses read in %v", time.Since(firehoseStarted))

	// B has all the records, old and new, in a repo signed with its key.
	st, err := bc.CheckAccountStatus(ctx, moved)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("B checkAccountStatus: %+v", st)
	if !st.Activated || !st.ValidDID || st.IndexedRecords != 4 || st.ExpectedBlobs != 1 || st.ImportedBlobs != 1 {
		t.Fatalf("B checkAccountStatus = %+v", st)
	}
	if carB, err = bc.GetRepo(ctx, alice.DID); err != nil {
		t.Fatal(err)
	}
	headB, pathsB = recordPaths(ctx, t, carB)
	want := []string{spaceSpaceColl + "/s1", memberColl + "/" + afterRKey, memberColl + "/m1", fileColl + "/f1"}
	slices.Sort(want)
	if !reflect.DeepEqual(pathsB, want) {
		t.Fatalf("B's repo holds %v, want %v", pathsB, want)
	}
	if headB.Rev != after.Rev {
		t.Fatalf("B's head rev %s, want %s", headB.Rev, after.Rev)
	}
	for _, ref := range []localpds.RecordRef{space, member, file} {
		coll, rkey, _ := strings.Cut(strings.TrimPrefix(ref.URI, "at://"+alice.DID+"/"), "/")
		rec, err := bc.GetRecord(ctx, alice.DID, coll, rkey)
		if err != nil || rec.CID != ref.CID {
			t.Fatalf("B getRecord %s = %+v, %v; want CID %s", ref.URI, rec, err, ref.CID)
		}
	}
	got, mime, err := bc.GetBlob(ctx, alice.DID, blob["ref"].(map[string]any)["$link"].(string))
	if err != nil || string(got) != "hello from A" {
		t.Fatalf("B getBlob = %q (%s), %v", got, mime, err)
	}

	// A has nothing left.
	_, err = ac.GetRepo(ctx, alice.DID)
	if xe := mustXRPCError(t, err, "getRepo on A after the deletion"); xe.Name != "RepoNotFound" {
		t.Fatalf("getRepo on A after the deletion: %+v", xe)
	}
	_, err = ac.CreateSession(ctx, alice.DID, password)
	mustXRPCError(t, err, "login on A after the deletion")

	// The DID document points at B, with B's signing key and rotation keys.
	data, err := b.PLCData(ctx, alice.DID)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := bc.GetRecommendedDIDCredentials(ctx, moved)
	if err != nil {
		t.Fatal(err)
	}
	if data.PDSEndpoint() != b.PublicURL || data.SigningKey() != creds.VerificationMethods["atproto"] ||
		!reflect.DeepEqual(data.RotationKeys, creds.RotationKeys) || !reflect.DeepEqual(data.AlsoKnownAs, []string{"at://alice.test"}) {
		t.Fatalf("PLC data after the migration = %+v, want %+v", data, creds)
	}
	doc, err := b.ResolveDID(ctx, alice.DID)
	if err != nil || doc.PDSEndpoint() != b.PublicURL {
		t.Fatalf("DID document after the migration: %+v, %v", doc, err)
	}
	audit, err := a.PLCAuditLog(ctx, alice.DID)
	if err != nil || len(audit) != 2 {
		t.Fatalf("PLC audit log: %d ops, %v; want 2 (create, update)", len(audit), err)
	}
	if err := headB.VerifySignature(keyB); err != nil {
		t.Fatalf("B's head commit is not signed with B's key: %v", err)
	}

	keys := map[string]atcrypto.PublicKey{"keyA": keyA, "keyB": keyB}
	logEvents(t, "A", evsA)
	logEvents(t, "B", evsB)
	revs := map[string]string{space.Rev: "revS", member.Rev: "revM", file.Rev: "revF", after.Rev: "revAfter"}
	for _, e := range evsA {
		if e.DID == alice.DID && e.Kind == "commit" && len(e.Ops) == 0 {
			revs[e.Rev] = "rev0"
		}
	}
	for _, e := range evsB {
		if e.Kind == "sync" {
			revs[e.Rev] = "revImport"
		}
	}
	var gotA, gotB []string
	for _, e := range ofDID(evsA, alice.DID) {
		gotA = append(gotA, describe(e, revs, keys))
	}
	for _, e := range ofDID(evsB, alice.DID) {
		gotB = append(gotB, describe(e, revs, keys))
	}
	t.Logf("A, alice:\n  %s", strings.Join(gotA, "\n  "))
	t.Logf("B, alice:\n  %s", strings.Join(gotB, "\n  "))
	wantA := []string{
		`identity handle="alice.test"`,
		`account active=true status=""`,
		`commit rev=rev0 block.rev=rev0 since=- prevData=false ops=0 signer=keyA`,
		`sync rev=rev0 block.rev=rev0 blocks=1 signer=keyA`,
		`commit rev=revS block.rev=revS since=rev0 prevData=true ops=1 signer=keyA`,
		`commit rev=revM block.rev=revM since=revS prevData=true ops=1 signer=keyA`,
		`commit rev=revF block.rev=revF since=revM prevData=true ops=1 signer=keyA`,
		// the migration: nothing until Migrate's last step
		`account active=false status="deactivated"`,
		// PDS.DeleteAccount
		`account active=false status="deleted"`,
	}
	wantB := []string{
		`identity handle=""`,            // submitPlcOperation, account still deactivated on B
		`account active=true status=""`, // activateAccount: these three in one batch
		`identity handle="alice.test"`,
		`sync rev=revImport block.rev=revF blocks=1 signer=keyA`, // A's commit, A's key
		`commit rev=revAfter block.rev=revAfter since=revF prevData=true ops=1 signer=keyB`,
	}
	if !reflect.DeepEqual(gotA, wantA) {
		t.Errorf("A's events of the account:\n  %s\nwant\n  %s", strings.Join(gotA, "\n  "), strings.Join(wantA, "\n  "))
	}
	if !reflect.DeepEqual(gotB, wantB) {
		t.Errorf("B's events of the account:\n  %s\nwant\n  %s", strings.Join(gotB, "\n  "), strings.Join(wantB, "\n  "))
	}
	// B had no other account: its seqs are 1..5. The #sync's commit is A's
	// last commit, and B's first commit builds on its MST root.
	if len(evsB) == len(wantB) {
		for i, e := range evsB {
			if e.Seq != int64(i+1) {
				t.Errorf("B event %d has seq %d", i, e.Seq)
			}
		}
		if syncB, firstB := evsB[3], evsB[4]; syncB.CommitCID != file.CommitCID || firstB.PrevData != syncB.Commit.Data.String() {
			t.Errorf("B's #sync carries commit %s, want A's last commit %s; B's first commit has prevData %s, want %s",
				syncB.CommitCID, file.CommitCID, firstB.PrevData, syncB.Commit.Data)
		}
		if file.Rev >= importRev || importRev >= after.Rev {
			t.Errorf("revs: A's last %s, B's import %s, B's first %s: not increasing", file.Rev, importRev, after.Rev)
		}
	}
	// Across the two PDSs: B activates before A deactivates.
	if i := slices.IndexFunc(evsA, func(e fhEvent) bool { return e.Status == "deactivated" }); i < 0 || len(evsB) < 2 || evsB[1].Time > evsA[i].Time {
		t.Errorf("B's #account active is not before A's #account deactivated")
	}

	// A's replay after the deletion keeps only the deletion: seq 9, the
	// earlier seqs of the DID are gone.
	replayA, err := readFirehose(ctx, a.SubscribeReposURL(0), deletedOnA)
	if err != nil {
		t.Fatal(err)
	}
	logEvents(t, "A replay after deletion", replayA)
	if len(replayA) != 1 || replayA[0].Seq != evsA[len(evsA)-1].Seq {
		t.Errorf("A's replay after the deletion = %v, want only %v", replayA, evsA[len(evsA)-1])
	}

	// Stop A first: the PLC stays up for B, which still resolves and
	// activates (activateAccount reads the DID from the PLC). Stopping B,
	// the last PDS on the PLC, stops the PLC and removes the temp dirs.
	root := filepath.Dir(b.DataDir)
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PLCData(ctx, alice.DID); err != nil {
		t.Fatalf("PLC after A stopped: %v", err)
	}
	if err := bc.DeactivateAccount(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if err := bc.ActivateAccount(ctx, moved); err != nil {
		t.Fatalf("activate on B after A stopped: %v", err)
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PLCData(ctx, alice.DID); err == nil {
		t.Fatal("the PLC still answers after its last PDS stopped")
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("temp dir %s of the PLC and its PDSs not removed: %v", root, err)
	}
	if p, err := localpds.Start(ctx, localpds.Options{SharePLC: b}); err == nil {
		p.Stop()
		t.Fatal("Start shared the PLC of stopped PDSs")
	} else {
		t.Logf("share a stopped PLC: %v", err)
	}
}
