package firehose_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/ident"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/forge"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/internal/tools/capture"
)

// plcServer serves DID documents as plc.directory does (GET /DID), and
// counts the fetches of each.
type plcServer struct {
	mu   sync.Mutex
	docs map[string][]byte
	gets map[string]int
	srv  *httptest.Server
}

func newPLC(t *testing.T) *plcServer {
	p := &plcServer{docs: map[string][]byte{}, gets: map[string]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		did := strings.TrimPrefix(r.URL.Path, "/")
		p.mu.Lock()
		doc, ok := p.docs[did]
		p.gets[did]++
		p.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(doc)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// setKey publishes did's document with key as its signing key.
func (p *plcServer) setKey(did string, key atcrypto.PublicKey) {
	doc := map[string]any{"id": did,
		"verificationMethod": []map[string]any{{"id": did + "#atproto", "type": "Multikey", "controller": did,
			"publicKeyMultibase": key.Multibase()}},
		"service": []map[string]any{{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
			"serviceEndpoint": "https://pds.example.com"}}}
	b, _ := json.Marshal(doc)
	p.mu.Lock()
	p.docs[did] = b
	p.mu.Unlock()
}

func (p *plcServer) fetches(did string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gets[did]
}

// directory is an ident.Directory over p.
func (p *plcServer) directory(t *testing.T, reg prometheus.Registerer) *ident.Directory {
	t.Helper()
	d, err := ident.New(ident.Config{PLCURL: p.srv.URL, HTTP: p.srv.Client(), Capacity: 100, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newVerifier(t *testing.T, dir identity.Directory) *firehose.Verifier {
	t.Helper()
	v, err := firehose.NewVerifier(firehose.VerifierConfig{Directory: dir})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func attackerKey(t *testing.T) *atcrypto.PrivateKeyK256 {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedFrame applies writes to r and returns the #commit frame.
func signedFrame(t *testing.T, r *fakepds.Repo, seq int64, edit func(c *fakepds.Commit), writes ...fakepds.Write) []byte {
	t.Helper()
	c, err := r.Apply(writes...)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(c)
	}
	f, err := fakepds.CommitFrame(c, seq, "2026-01-01T00:00:00Z")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// verify decodes frame with the projected-collections filter and verifies it.
func verify(t *testing.T, v firehose.CommitVerifier, frame []byte) error {
	t.Helper()
	f, err := firehose.DecodeFrame(frame, onlySpaces)
	if err != nil {
		t.Fatal(err)
	}
	return v.VerifyCommit(t.Context(), f.Event, frame)
}

func reasonOf(err error) string {
	var ue *firehose.UnverifiedError
	if errors.As(err, &ue) {
		return ue.Reason
	}
	return ""
}

// TestVerifyCommit: signed commits from indigo's repo library pass; the
// same commits altered fail, each for its own reason.
func TestVerifyCommit(t *testing.T) {
	t.Parallel()
	plc := newPLC(t)
	dir := plc.directory(t, nil)
	v := newVerifier(t, dir)
	alice, err := fakepds.NewRepo(fakepds.PLCDID("alice"))
	if err != nil {
		t.Fatal(err)
	}
	plc.setKey(alice.DID(), alice.PublicKey())
	if err := verify(t, v, signedFrame(t, alice, 1, nil, spaceWrite("create", "root", false), postWrite("p1"))); err != nil {
		t.Fatalf("first commit (no prevData): %v", err)
	}
	good := signedFrame(t, alice, 2, nil, spaceWrite("update", "root", true), spaceWrite("create", "kid", false))
	if err := verify(t, v, good); err != nil {
		t.Fatalf("good commit: %v", err)
	}

	// One record altered, the tree and CAR made consistent, re-signed by
	// another key: only the signature gives it away.
	mallory := attackerKey(t)
	forged, err := forge.Commit(good, forge.Options{Key: mallory, Match: onlySpaces})
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(t, v, forged.Frame); reasonOf(err) != firehose.UnverifiedSignature || !errors.Is(err, firehose.ErrUnverified) {
		t.Fatalf("forged commit: %v, want %s", err, firehose.UnverifiedSignature)
	}
	// The forgery is otherwise consistent: with mallory's key as the
	// account's, it passes (so the refusal above is the signature's).
	mpub, _ := mallory.PublicKey()
	mdir := identity.NewMockDirectory()
	mdir.Insert(identity.Identity{DID: syntax.DID(alice.DID()), Keys: map[string]identity.VerificationMethod{
		"atproto": {Type: "Multikey", PublicKeyMultibase: mpub.Multibase()}}})
	if err := verify(t, newVerifier(t, mdir), forged.Frame); err != nil {
		t.Fatalf("the forgery is not consistent: %v", err)
	}

	// prevData that the ops don't invert to.
	other, err := cid.NewPrefixV1(cid.DagCBOR, 0x12).Sum([]byte("another tree"))
	if err != nil {
		t.Fatal(err)
	}
	bad := signedFrame(t, alice, 3, func(c *fakepds.Commit) { c.PrevData = &other }, spaceWrite("create", "k2", false))
	if err := verify(t, v, bad); reasonOf(err) != firehose.UnverifiedPrevData {
		t.Fatalf("wrong prevData: %v, want %s", err, firehose.UnverifiedPrevData)
	}
	// An op whose CID is not what the signed tree holds.
	bad = signedFrame(t, alice, 4, func(c *fakepds.Commit) { c.Ops[0].CID = &other }, spaceWrite("create", "k3", false))
	if err := verify(t, v, bad); reasonOf(err) != firehose.UnverifiedOpMismatch {
		t.Fatalf("wrong op CID: %v, want %s", err, firehose.UnverifiedOpMismatch)
	}
	// An op hidden from the list (a delete a relay drops): the inversion
	// no longer gives prevData.
	bad = signedFrame(t, alice, 5, func(c *fakepds.Commit) { c.Ops = c.Ops[:1] },
		spaceWrite("create", "k4", false), fakepds.Write{Action: "delete", Collection: "com.atproto.space.space", RKey: "kid"})
	if err := verify(t, v, bad); reasonOf(err) != firehose.UnverifiedPrevData {
		t.Fatalf("hidden delete: %v, want %s", err, firehose.UnverifiedPrevData)
	}
	// An account nobody can resolve.
	bob, _ := fakepds.NewRepo(fakepds.PLCDID("bob"))
	if err := verify(t, v, signedFrame(t, bob, 6, nil, spaceWrite("create", "root", false))); reasonOf(err) != firehose.UnverifiedIdentity ||
		!errors.Is(err, ident.ErrDIDNotFound) {
		t.Fatalf("unknown DID: %v, want %s wrapping ErrDIDNotFound", err, firehose.UnverifiedIdentity)
	}
}

// TestVerifyAfterKeyRotation: the cached key is stale after a rotation; a
// failed signature purges it and the fresh key is accepted.
func TestVerifyAfterKeyRotation(t *testing.T) {
	t.Parallel()
	plc := newPLC(t)
	reg := prometheus.NewRegistry()
	v := newVerifier(t, plc.directory(t, reg))
	alice, _ := fakepds.NewRepo(fakepds.PLCDID("alice"))
	plc.setKey(alice.DID(), alice.PublicKey())
	if err := verify(t, v, signedFrame(t, alice, 1, nil, spaceWrite("create", "root", false))); err != nil {
		t.Fatal(err)
	}
	rotated, err := alice.RotateKey()
	if err != nil {
		t.Fatal(err)
	}
	plc.setKey(alice.DID(), rotated)
	if err := verify(t, v, signedFrame(t, alice, 2, nil, spaceWrite("update", "root", true))); err != nil {
		t.Fatalf("commit signed with the rotated key: %v", err)
	}
	if n := plc.fetches(alice.DID()); n != 2 {
		t.Fatalf("%d fetches of the DID document, want 2 (one purge)", n)
	}
	if p := metrictest.Value(t, reg, "spaces_authz_identity_purges_total"); p != 1 {
		t.Fatalf("purges %v, want 1", p)
	}
	// A commit still signed with the OLD key is refused after one more
	// (fruitless) refresh.
	mallory := attackerKey(t)
	good := signedFrame(t, alice, 3, nil, spaceWrite("create", "k", false))
	forged, err := forge.Commit(good, forge.Options{Key: mallory})
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(t, v, forged.Frame); reasonOf(err) != firehose.UnverifiedSignature {
		t.Fatalf("forged: %v", err)
	}
}

// countingVerifier counts the commits it is asked to verify.
type countingVerifier struct {
	inner  *firehose.Verifier
	calls  atomic.Int64
	purges atomic.Int64
}

func (c *countingVerifier) PurgeKey(ctx context.Context, did string) error {
	c.purges.Add(1)
	return c.inner.PurgeKey(ctx, did)
}

func (c *countingVerifier) VerifyCommit(ctx context.Context, ev *firehose.Event, frame []byte) error {
	c.calls.Add(1)
	return c.inner.VerifyCommit(ctx, ev, frame)
}

// TestClientMarksUnverifiedCommits: through the client, a forged commit
// arrives with Unverified set and is counted; commits without a projected
// op are not verified at all.
func TestClientMarksUnverifiedCommits(t *testing.T) {
	t.Parallel()
	pds := fakepds.New(t)
	plc := newPLC(t)
	alice, err := pds.CreateAccount("alice")
	if err != nil {
		t.Fatal(err)
	}
	plc.setKey(alice.DID(), alice.PublicKey())
	cv := &countingVerifier{inner: newVerifier(t, plc.directory(t, nil))}
	for i := range 3 {
		if _, _, err := pds.Commit(alice.DID(), postWrite(rkey(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := pds.Commit(alice.DID(), spaceWrite("create", "root", false)); err != nil {
		t.Fatal(err)
	}
	mallory := attackerKey(t)
	var forgedPath string
	if _, err := pds.InjectSequenced(func(seq int64) ([]byte, error) {
		good := signedFrame(t, alice, seq, nil, spaceWrite("create", "kid", false), postWrite("px"))
		f, err := forge.Commit(good, forge.Options{Key: mallory, Match: onlySpaces,
			Edit: func(r map[string]any) { r["displayName"] = "owned" }})
		if err != nil {
			return nil, err
		}
		forgedPath = f.Path
		return f.Frame, nil
	}); err != nil {
		t.Fatal(err)
	}
	tr := checkpoint.NewTracker(0, 0, nil)
	rec := newRecorder(tr)
	r := start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec, Filter: onlySpaces, Verifier: cv})
	// #identity, #account, empty commit, #sync, 3 posts, 1 space, 1 forged.
	waitFor(t, "9 events", func() bool { return rec.count() == 9 })
	evs := rec.snapshot()
	for _, ev := range evs[:8] {
		if ev.Unverified != "" {
			t.Fatalf("seq %d unverified: %s", ev.Seq, ev.Unverified)
		}
	}
	last := evs[8]
	if last.Unverified != firehose.UnverifiedSignature || len(last.Ops) != 1 || last.Ops[0].Path() != forgedPath ||
		last.Ops[0].Record["displayName"] != "owned" {
		t.Fatalf("forged event: unverified %q ops %+v", last.Unverified, last.Ops)
	}
	if n := cv.calls.Load(); n != 2 {
		t.Fatalf("%d commits verified, want 2 (only those with a projected op)", n)
	}
	if n := cv.purges.Load(); n != 1 {
		t.Fatalf("%d keys purged, want 1 (the #identity event)", n)
	}
	if got := metrictest.Value(t, r.reg, "spaces_authz_commits_unverified_total", "reason", firehose.UnverifiedSignature); got != 1 {
		t.Fatalf("unverified metric %v, want 1", got)
	}
	if got := metrictest.Value(t, r.reg, "spaces_authz_commits_verified_total"); got != 1 {
		t.Fatalf("verified metric %v, want 1", got)
	}
}

// TestSnapshotSignature: with VerifyKey, a getRepo whose commit is not
// signed by the account's key fails with ErrUnverified; after a rotation
// the fresh key is fetched once and accepted.
func TestSnapshotSignature(t *testing.T) {
	t.Parallel()
	pds := fakepds.New(t)
	plc := newPLC(t)
	v := newVerifier(t, plc.directory(t, nil))
	alice, err := pds.CreateAccount("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pds.Commit(alice.DID(), spaceWrite("create", "root", false)); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	c, err := firehose.NewSyncClient(firehose.SyncConfig{URL: pds.URL(), VerifyKey: v.SigningKey, PurgeKey: v.PurgeKey,
		Metrics: firehose.NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	// The DID document names another key than the one the repo is signed with.
	plc.setKey(alice.DID(), mustPublic(t, attackerKey(t)))
	if _, err := c.GetRepo(t.Context(), alice.DID(), nil); !errors.Is(err, firehose.ErrUnverified) ||
		reasonOf(err) != firehose.UnverifiedSignature {
		t.Fatalf("snapshot signed by another key: %v, want ErrUnverified", err)
	}
	if got := metrictest.Value(t, reg, "spaces_authz_sync_repo_fetches_total", "result", "unverified"); got != 1 {
		t.Fatalf("unverified fetches %v", got)
	}
	// The account's real key is published (a rotation the cache has not seen).
	plc.setKey(alice.DID(), alice.PublicKey())
	snap, err := c.GetRepo(t.Context(), alice.DID(), nil)
	if err != nil {
		t.Fatalf("snapshot after the key is published: %v", err)
	}
	if len(snap.Records) != 1 {
		t.Fatalf("%d records", len(snap.Records))
	}
	if n := plc.fetches(alice.DID()); n != 3 {
		t.Fatalf("%d fetches, want 3 (first, refresh on failure, refresh after the rotation)", n)
	}
	// Without VerifyKey nothing is checked.
	plain, _ := firehose.NewSyncClient(firehose.SyncConfig{URL: pds.URL()})
	plc.setKey(alice.DID(), mustPublic(t, attackerKey(t)))
	if _, err := plain.GetRepo(t.Context(), alice.DID(), nil); err != nil {
		t.Fatal(err)
	}
}

// TestCorpusCommitsVerify: every commit of the real relay capture passes,
// against the DID documents captured with it (the verifier agrees with the
// network's signatures and sync 1.1 proofs).
func TestCorpusCommitsVerify(t *testing.T) {
	t.Parallel()
	docs := corpusDIDDocs(t)
	plc := newPLC(t)
	for did, doc := range docs {
		plc.docs[did] = doc
	}
	v := newVerifier(t, plc.directory(t, nil))
	// Everyone's key is mallory's here: a forgery that is consistent
	// (tree, CAR, ops, prevData) passes against it.
	mallory := attackerKey(t)
	mdir := identity.NewMockDirectory()
	for did := range docs {
		mdir.Insert(identity.Identity{DID: syntax.DID(did), Keys: map[string]identity.VerificationMethod{
			"atproto": {Type: "Multikey", PublicKeyMultibase: mustPublic(t, mallory).Multibase()}}})
	}
	asMallory := newVerifier(t, mdir)
	n, forgedN := 0, 0
	frames, err := capture.ReadFile(relayCorpus + "/frames.bin.zst")
	if err != nil {
		t.Fatal(err)
	}
	for _, frame := range frames {
		f, err := firehose.DecodeFrame(frame, nil)
		if err != nil || f.Event == nil || f.Event.Kind != firehose.KindCommit {
			continue
		}
		if err := v.VerifyCommit(t.Context(), f.Event, frame); err != nil {
			t.Errorf("seq %d %s: %v", f.Event.Seq, f.Event.DID, err)
		}
		n++
		// The same frame with one record's value forged is refused.
		forged, err := forge.Commit(frame, forge.Options{Key: mallory})
		if errors.Is(err, forge.ErrNoTarget) {
			continue // a commit with only deletes
		}
		if err != nil {
			t.Errorf("seq %d: forge: %v", f.Event.Seq, err)
			continue
		}
		forgedN++
		if err := v.VerifyCommit(t.Context(), f.Event, forged.Frame); reasonOf(err) != firehose.UnverifiedSignature {
			t.Errorf("seq %d forged: %v", f.Event.Seq, err)
		}
		if err := asMallory.VerifyCommit(t.Context(), f.Event, forged.Frame); err != nil {
			t.Errorf("seq %d: the forgery is not consistent: %v", f.Event.Seq, err)
		}
		ff, err := firehose.DecodeFrame(forged.Frame, nil)
		if err != nil {
			t.Fatal(err)
		}
		ff.DecodeRecords()
		for _, op := range ff.Event.Ops {
			if op.Path() == forged.Path && (op.Err != nil || op.Record["forged"] != true) {
				t.Errorf("seq %d: the forged record reads as %+v", f.Event.Seq, op)
			}
		}
	}
	if forgedN < 140 {
		t.Fatalf("only %d commits forged", forgedN)
	}
	if n != 148 {
		t.Fatalf("%d commits verified, want 148", n)
	}
}

const relayCorpus = "../testdata/relay-2026-07-04"

func corpusDIDDocs(t testing.TB) map[string][]byte {
	t.Helper()
	f, err := os.Open(relayCorpus + "/did_docs.json.zst")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var m map[string]json.RawMessage
	if err := json.NewDecoder(zr).Decode(&m); err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func mustPublic(t *testing.T, k *atcrypto.PrivateKeyK256) atcrypto.PublicKey {
	t.Helper()
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestClientUncheckedAndVerifyAlso: with a Verifier, a commit with no
// projected op is delivered Unchecked (its rev is not the account's word),
// unless VerifyAlso names its repo: then it is verified like the others,
// and one forged (re-signed by another key) arrives Unverified instead of
// passing with a rev the engine would take.
func TestClientUncheckedAndVerifyAlso(t *testing.T) {
	t.Parallel()
	pds := fakepds.New(t)
	plc := newPLC(t)
	alice, err := pds.CreateAccount("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := pds.CreateAccount("bob")
	if err != nil {
		t.Fatal(err)
	}
	plc.setKey(alice.DID(), alice.PublicKey())
	plc.setKey(bob.DID(), bob.PublicKey())
	cv := &countingVerifier{inner: newVerifier(t, plc.directory(t, nil))}
	if _, _, err := pds.Commit(alice.DID(), postWrite("p1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pds.Commit(bob.DID(), postWrite("p1")); err != nil {
		t.Fatal(err)
	}
	mallory := attackerKey(t)
	if _, err := pds.InjectSequenced(func(seq int64) ([]byte, error) {
		good := signedFrame(t, alice, seq, nil, postWrite("p2"))
		f, err := forge.Commit(good, forge.Options{Key: mallory})
		if err != nil {
			return nil, err
		}
		return f.Frame, nil
	}); err != nil {
		t.Fatal(err)
	}
	tr := checkpoint.NewTracker(0, 0, nil)
	rec := newRecorder(tr)
	start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec, Filter: onlySpaces, Verifier: cv,
		VerifyAlso: func(did string) bool { return did == alice.DID() }})
	var posts []*firehose.Event
	waitFor(t, "3 post commits", func() bool {
		posts = posts[:0]
		for _, ev := range rec.snapshot() {
			if ev.Kind == firehose.KindCommit && ev.Rev != "" && len(ev.Ops) == 0 && ev.Since != "" {
				posts = append(posts, ev)
			}
		}
		return len(posts) == 3
	})
	for _, ev := range posts {
		switch {
		case ev.DID == bob.DID():
			if !ev.Unchecked || ev.Unverified != "" {
				t.Fatalf("bob's post: unchecked %v unverified %q, want unchecked", ev.Unchecked, ev.Unverified)
			}
		case ev.Rev == posts[len(posts)-1].Rev:
			if ev.Unchecked || ev.Unverified != firehose.UnverifiedSignature {
				t.Fatalf("alice's forged post: unchecked %v unverified %q", ev.Unchecked, ev.Unverified)
			}
		default:
			if ev.Unchecked || ev.Unverified != "" {
				t.Fatalf("alice's post: unchecked %v unverified %q, want verified", ev.Unchecked, ev.Unverified)
			}
		}
	}
}

// TestVerifyInjectedDelete: a relay appends to a genuinely signed commit a
// delete of a record the account still holds (without prev, and without
// prevData, so that nothing is inverted). The signed tree still holds the
// record: the commit must be refused, or the relay could revoke any grant
// of any account. Before the fix a delete op was not checked at all.
func TestVerifyInjectedDelete(t *testing.T) {
	t.Parallel()
	plc := newPLC(t)
	v := newVerifier(t, plc.directory(t, nil))
	alice, err := fakepds.NewRepo(fakepds.PLCDID("alice"))
	if err != nil {
		t.Fatal(err)
	}
	plc.setKey(alice.DID(), alice.PublicKey())
	if err := verify(t, v, signedFrame(t, alice, 1, nil, spaceWrite("create", "root", false))); err != nil {
		t.Fatal(err)
	}
	inject := func(c *fakepds.Commit) {
		c.PrevData = nil
		c.Ops = append(c.Ops, fakepds.OpOut{Action: "delete", Path: "com.atproto.space.space/root"})
	}
	bad := signedFrame(t, alice, 2, inject, postWrite("p1"))
	if err := verify(t, v, bad); reasonOf(err) != firehose.UnverifiedOpMismatch {
		t.Fatalf("injected delete: %v, want %s", err, firehose.UnverifiedOpMismatch)
	}
	// A genuine delete (without prev, as pre-sync-1.1 hosts send it) passes.
	strip := func(c *fakepds.Commit) {
		c.PrevData = nil
		for i := range c.Ops {
			c.Ops[i].Prev = nil
		}
	}
	good := signedFrame(t, alice, 3, strip, fakepds.Write{Action: "delete", Collection: "com.atproto.space.space", RKey: "root"})
	if err := verify(t, v, good); err != nil {
		t.Fatalf("genuine delete: %v", err)
	}
}
