package projector

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/view"
)

const postCol = "app.bsky.feed.post/"

func post(i int) map[string]any {
	return map[string]any{"$type": "app.bsky.feed.post", "text": fmt.Sprint("post ", i)}
}

// storedRev is the rev tuple SpiceDB holds for did ("" when none).
func (m *memView) storedRev(did string) string {
	revs := m.matching(func(t view.Tuple) bool { return t.Relation == view.RelRev && t.ResourceID == view.RepoID(did) })
	if len(revs) != 1 {
		return fmt.Sprint(len(revs), " rev tuples")
	}
	return revs[0].SubjectID
}

// TestMemCommitsWithoutProjectedChangesCostNoWrite: posts by a user who has
// a space (the case this project exists for) write no rev of their own;
// the repo's newest rev is stored once the stream goes idle, the cursor
// then reaches the end, and a read-your-writes wait for the last post's
// rev answers at once.
func TestMemCommitsWithoutProjectedChangesCostNoWrite(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false),
		relCol + "g1": grant(memAlice, "root", "viewer", memBob)})
	h.assertView("space")
	before := h.view.revUpdates
	const posts = 200
	var last *firehose.Event
	for i := range posts {
		last = h.write(memAlice, map[string]map[string]any{postCol + fmt.Sprint(i): post(i)})
		h.send(last)
	}
	h.assertView("posts")
	revs := h.view.revUpdates - before
	t.Logf("%d posts wrote %d rev updates", posts, revs)
	// One flush when the stream goes idle is 2 updates; a slow machine may
	// see an idle tick or two in between.
	if revs > 12 {
		t.Fatalf("%d posts wrote %d rev updates; a commit that changes no projected record must not write its rev", posts, revs)
	}
	if got := h.view.storedRev(memAlice); got != last.Rev {
		t.Fatalf("stored rev %s, want the last post's %s", got, last.Rev)
	}
	if got := metrictest.Value(t, h.reg, "spaces_authz_revs_deferred_total"); got != posts {
		t.Fatalf("spaces_authz_revs_deferred_total %v, want %d", got, posts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := h.engine.WaitApplied(ctx, memAlice, last.Rev); err != nil {
		t.Fatalf("read-your-writes for the last post: %v", err)
	}
}

// TestMemDeferredRevsSurviveACrash: a crash while revs are deferred leaves
// a cursor below them, so the replay chains from the stored rev (no false
// gap, no resync) and nothing is lost. The crash is taken as a copy of what
// SpiceDB holds while the revs are deferred.
func TestMemDeferredRevsSurviveACrash(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.flushEvery, h.revFlushAfter = time.Hour, time.Hour // nothing but a write of alice's stores her rev
	h.start(checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	var events []*firehose.Event
	send := func(ev *firehose.Event) { events = append(events, ev); h.send(ev) }
	send(h.write(memAlice, map[string]map[string]any{spaceCol + "root": space(false)}))
	for i := range 20 {
		send(h.write(memAlice, map[string]map[string]any{postCol + fmt.Sprint(i): post(i)}))
	}
	// Bob's commits keep the cursor moving past alice's posts, as other
	// repos' writes do on a busy PDS.
	send(h.write(memBob, map[string]map[string]any{spaceCol + "b": space(false)}))
	send(h.write(memBob, map[string]map[string]any{relCol + "g": grant(memBob, "b", "viewer", memAlice)}))
	deadline := time.Now().Add(5 * time.Second)
	bobsGrant := func(t view.Tuple) bool { return t.ResourceType == view.TypeSpace && t.Relation == "viewer" }
	for h.prog.Tracker().Watermark() < h.seq || len(h.view.matching(bobsGrant)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("events not applied")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	h.view.mu.Lock()
	crash := maps.Clone(h.view.rels)
	h.view.mu.Unlock()

	// The invariant: the stored rev covers every commit at or below the
	// stored cursor.
	crashView := &memView{rels: crash}
	stored := crashView.progress(t)
	if stored.Cursor == checkpoint.None {
		stored.Cursor = 0 // the harness began at 0 without storing it
	}
	cursor := stored.Cursor
	storedRev := crashView.storedRev(memAlice)
	for _, ev := range events {
		if ev.DID == memAlice && ev.Seq <= cursor && ev.Rev > storedRev {
			t.Fatalf("cursor %d passed alice's commit %d (rev %s) while her stored rev is %s", cursor, ev.Seq, ev.Rev, storedRev)
		}
	}
	if cursor >= events[1].Seq {
		t.Fatalf("the crash was not taken while alice's revs were deferred: cursor %d, first post %d", cursor, events[1].Seq)
	}

	// Restart on the crash's state and replay what the cursor does not
	// cover, then go on.
	h.stop()
	h.view.mu.Lock()
	h.view.rels = crash
	h.view.mu.Unlock()
	h.flushEvery, h.revFlushAfter = 0, 0
	h.start(stored)
	for _, ev := range events {
		if ev.Seq > cursor {
			replay := *ev
			h.send(&replay)
		}
	}
	h.commit(memAlice, map[string]map[string]any{relCol + "g1": grant(memAlice, "root", "editor", memBob)})
	h.assertView("after the crash")
	if got := metrictest.Value(t, h.reg, "spaces_authz_resyncs_total", "trigger", TriggerGap); got != 0 {
		t.Fatalf("%v gap resyncs after the crash; the replay must chain from the stored rev", got)
	}
	if got, want := h.view.storedRev(memAlice), h.pds.repos[memAlice].rev; got != want {
		t.Fatalf("stored rev %s, want %s", got, want)
	}
}

// TestMemCleanStopStoresDeferredRevs: a clean stop writes the deferred revs
// and the cursor past them, so a restart replays nothing.
func TestMemCleanStopStoresDeferredRevs(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.flushEvery, h.revFlushAfter = time.Hour, time.Hour
	h.start(checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.commit(memAlice, map[string]map[string]any{spaceCol + "root": space(false)})
	for i := range 5 {
		h.commit(memAlice, map[string]map[string]any{postCol + fmt.Sprint(i): post(i)})
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.prog.Tracker().Watermark() < h.seq || h.prog.Held() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("events not applied and held (watermark %d, held %d)", h.prog.Tracker().Watermark(), h.prog.Held())
		}
		time.Sleep(time.Millisecond)
	}
	h.stop()
	if got, want := h.view.progress(t).Cursor, h.seq; got != want {
		t.Fatalf("cursor after a clean stop %d, want %d", got, want)
	}
	if got, want := h.view.storedRev(memAlice), h.pds.repos[memAlice].rev; got != want {
		t.Fatalf("stored rev after a clean stop %s, want %s", got, want)
	}
}

// TestMemLineageCacheBoundedByRecords: the cached lineage is bounded by
// records, not only by repos (a few repos with many records each), and an
// evicted repo's lineage is read back when it is needed again.
func TestMemLineageCacheBoundedByRecords(t *testing.T) {
	h := newMemHarness(t, checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	h.cacheRecords = 5
	h.start(checkpoint.State{Cursor: 0, Rewind: checkpoint.None, Rebuild: checkpoint.None})
	for _, did := range []string{memAlice, memBob} {
		h.commit(did, map[string]map[string]any{spaceCol + "root": space(false),
			relCol + "g1": grant(did, "root", "viewer", memBob), relCol + "g2": grant(did, "root", "editor", memBob),
			relCol + "g3": grant(did, "root", "viewer", memAlice)})
	}
	h.assertView("two repos of 4 records")
	h.commit(memBob, map[string]map[string]any{postCol + "p": post(0)}) // a batch commits: eviction runs
	h.assertView("a post")
	cached := 0
	h.engine.mu.Lock()
	for el := h.engine.lru.Front(); el != nil; el = el.Next() {
		if l := el.Value.(*didState).lin; l != nil {
			cached += len(l.byRecord)
		}
	}
	h.engine.mu.Unlock()
	if cached > 5 {
		t.Fatalf("%d records of lineage cached, want at most 5", cached)
	}
	// Alice's lineage was evicted: changing her records reads it back.
	h.commit(memAlice, map[string]map[string]any{relCol + "g1": nil, relCol + "g3": grant(memAlice, "root", "admin", memBob)})
	h.assertView("after reading an evicted lineage back")
}
