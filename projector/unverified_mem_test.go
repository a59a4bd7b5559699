package projector

import (
	"errors"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/view"
)

const memMallory = "did:plc:mallory"

// forgedGrant is a commit event whose one op the PDS really wrote (a
// viewer grant to bob) but whose record, as the stream carries it, grants
// mallory the same, and that the stream's verifier refused.
func forgedGrant(h *memHarness) *firehose.Event {
	ev := h.write(memAlice, map[string]map[string]any{relCol + "g": grant(memAlice, "root", "viewer", memBob)})
	ev.Ops[0].Record = grant(memAlice, "root", "viewer", memMallory)
	ev.Unverified = firehose.UnverifiedSignature
	return ev
}

func mentionsMallory(h *memHarness) []string {
	var out []string
	for _, s := range h.got() {
		if strings.Contains(s, "mallory") {
			out = append(out, s)
		}
	}
	return out
}

// TestMemUnverifiedCommitResyncs: a commit the verifier refused is not
// applied nor published; the repo is read from its PDS instead.
func TestMemUnverifiedCommitResyncs(t *testing.T) {
	h := &memHarness{t: t, view: &memView{rels: map[view.Tuple]bool{}}, pds: &memPDS{repos: map[string]*memRepo{}},
		reg: prometheus.NewRegistry(), clock: 1_700_000_000_000_000, pub: &memPublisher{}}
	h.start(checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false)})
	h.assertView("before")
	h.send(forgedGrant(h))
	h.assertView("after an unverified commit")
	if m := mentionsMallory(h); len(m) > 0 {
		t.Fatalf("the forged record was applied: %v", m)
	}
	if !strings.Contains(strings.Join(h.got(), " "), "viewer@acct:did|plc|bob") {
		t.Fatal("the PDS's real record is missing after the resync")
	}
	if got := metrictest.Value(t, h.reg, "spaces_authz_resyncs_total", "trigger", TriggerUnverified); got != 1 {
		t.Fatalf("unverified resyncs %v, want 1", got)
	}
	if pub := h.pub.published(func(c view.Change) bool { return c.Record != nil && c.Record["subject"] == memMallory }); len(pub) > 0 {
		t.Fatalf("the forged record was published: %+v", pub)
	}
	// The resync's diff publishes the real record.
	if pub := h.pub.published(func(c view.Change) bool { return c.Record != nil && c.Record["subject"] == memBob }); len(pub) != 1 {
		t.Fatalf("the real record was published %d times, want 1", len(pub))
	}
}

// TestMemUnverifiedCommitWithFailedResync: when the resync fails too, the
// unverified commit is still not applied (a Malformed one would be, as it
// is).
func TestMemUnverifiedCommitWithFailedResync(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false)})
	h.assertView("before")
	h.engine.cfg.ResyncAttempts = 1
	h.failGetRepo(memAlice, errors.New("getRepo: 503 upstream"))
	h.send(forgedGrant(h))
	h.settle()
	if m := mentionsMallory(h); len(m) > 0 {
		t.Fatalf("the forged record was applied after a failed resync: %v", m)
	}
	if st := h.engine.Status(); st.Desynchronized != 1 {
		t.Fatalf("status %+v, want alice desynchronized", st)
	}
	h.failGetRepo(memAlice, nil)
	deadline := time.Now().Add(5 * time.Second)
	for h.engine.Status().Desynchronized != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the retry did not resync alice")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.assertView("after the retry")
	if m := mentionsMallory(h); len(m) > 0 {
		t.Fatalf("the forged record was applied: %v", m)
	}
}

// TestMemUncheckedCommitDoesNotTakeRev: behind a relay, a commit with no
// projected op is not verified (Event.Unchecked), so its rev is the
// relay's word. A relay that forges one with a far-future rev must not
// make the account's later, genuine commits look stale (before the fix the
// engine took the forged rev, and the revocation below was ignored as a
// duplicate: bob kept his access).
func TestMemUncheckedCommitDoesNotTakeRev(t *testing.T) {
	h := &memHarness{t: t, view: &memView{rels: map[view.Tuple]bool{}}, pds: &memPDS{repos: map[string]*memRepo{}},
		reg: prometheus.NewRegistry(), clock: 1_700_000_000_000_000, pub: &memPublisher{}}
	h.start(checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false),
		relCol + "g": grant(memAlice, "root", "viewer", memBob)})
	h.assertView("before")
	// The forged commit: it chains from the applied rev, carries no
	// projected op, and claims a rev far in the future.
	h.seq++
	h.send(&firehose.Event{Seq: h.seq, Kind: firehose.KindCommit, DID: memAlice, Since: h.repo(memAlice).rev,
		Rev: syntax.NewTID(h.clock+1_000_000_000_000, 0).String(), Unchecked: true,
		Time: time.Now().UTC().Format(time.RFC3339Nano)})
	// A genuine (unchecked) post, then alice revokes bob's grant.
	post := h.write(memAlice, nil)
	post.Unchecked = true
	h.send(post)
	h.commit(memAlice, map[string]map[string]any{relCol + "g": nil})
	h.assertView("after the revocation")
}

// TestMemUncheckedMalformedCommitWithFailedResync: a Malformed commit is
// not verified (the client keeps no frame for it), so behind a relay it
// is Unchecked. When its resync fails (the account's PDS is down, which
// the relay, crawling it, knows), its readable ops must not be applied
// "as they are": before the fix a relay could forge a commit granting
// mallory, add an unreadable op, and have the grant applied until a retry.
func TestMemUncheckedMalformedCommitWithFailedResync(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false)})
	h.assertView("before")
	h.engine.cfg.ResyncAttempts = 1
	h.failGetRepo(memAlice, errors.New("getRepo: 503 upstream"))
	ev := forgedGrant(h)
	ev.Unverified, ev.Unchecked, ev.Malformed = "", true, "unreadable op"
	ev.Rev = syntax.NewTID(h.clock+1_000_000_000_000, 0).String() // and a far-future rev
	h.send(ev)
	h.settle()
	if m := mentionsMallory(h); len(m) > 0 {
		t.Fatalf("the forged record was applied after a failed resync: %v", m)
	}
	h.failGetRepo(memAlice, nil)
	deadline := time.Now().Add(5 * time.Second)
	for h.engine.Status().Desynchronized != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the retry did not resync alice")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.assertView("after the retry")
	// The forged rev was not taken: alice's next commit applies.
	h.commit(memAlice, map[string]map[string]any{relCol + "g": grant(memAlice, "root", "viewer", memBob)})
	h.assertView("after alice's next commit")
}
