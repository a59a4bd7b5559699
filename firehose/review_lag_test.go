package firehose_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
)

// TestLagGrowsWhileStuckOnAFutureDatedEvent: an event's `time` is the PDS's
// (or an attacker's) say. One dated far in the future, read and then stuck
// (never applied), must not hide the stall: the consumer is connected, one
// event behind, and nothing moves, so lag_seconds has to grow with the wall
// clock from (at the latest) the moment the event was read. Before the fix
// it read 0 for as long as the event stayed stuck (until 2099).
func TestLagGrowsWhileStuckOnAFutureDatedEvent(t *testing.T) {
	pds := fakepds.New(t)
	a, err := pds.CreateAccount("alice")
	if err != nil {
		t.Fatal(err)
	}
	tr := checkpoint.NewTracker(0, 0, nil)
	rec := newRecorder(tr)
	rec.hold = true // the test applies; what comes last is never applied (SpiceDB refuses, a lane blocks...)
	r := start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec})
	// Both: the client begins an event in the tracker before the handler
	// records it, so InFlight alone can be ahead of what Done may end.
	waitFor(t, "all read", func() bool { return tr.InFlight() == int(pds.Head()) && len(rec.snapshot()) == int(pds.Head()) })
	for _, ev := range rec.snapshot() {
		tr.Done(ev.Seq)
	}
	if _, err := pds.InjectSequenced(func(seq int64) ([]byte, error) {
		c, err := a.Apply(postWrite("future"))
		if err != nil {
			return nil, err
		}
		return fakepds.CommitFrame(c, seq, "2099-01-01T00:00:00Z")
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the future-dated event in flight", func() bool { return tr.InFlight() == 1 })
	time.Sleep(1500 * time.Millisecond)
	events, seconds := lagMetrics(t, r)
	if up, _ := r.client.Connected(); !up || events != 1 {
		t.Fatalf("connected=%v lag_events %v; want connected, 1", up, events)
	}
	if seconds < 1 {
		t.Fatalf("stuck for 1.5 s on an event dated 2099: lag_seconds %v; want >= 1 (growing from its reading)", seconds)
	}
}

// flappingPDS accepts every subscribeRepos upgrade and closes the
// connection after up, without a frame: a PDS in a crash loop behind a
// proxy, or a load balancer that cuts idle websockets.
func flappingPDS(t *testing.T, up time.Duration) string {
	t.Helper()
	u := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		time.Sleep(up)
		_ = c.Close()
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestLagGrowsWhileTheLinkFlapsWithoutDelivering: a link that comes up and
// dies again before delivering anything is no better than no link: nothing
// is known of the PDS since the consumer started, so the lag has to grow
// from the start (DESIGN §8: "the process start if the link never came
// up"). Before, each short-lived connection reset it: 0 while connected
// (the last frame, never, counts as "quiet") and, while down, only the time
// since the last drop, bounded by the reconnect backoff (30 s at most), so
// SpacesAuthzLagHigh (> 60 s) never fires for such a consumer.
func TestLagGrowsWhileTheLinkFlapsWithoutDelivering(t *testing.T) {
	tr := checkpoint.NewTracker(0, 0, nil)
	r := start(t, firehose.Config{URL: flappingPDS(t, 30*time.Millisecond), Tracker: tr, Handler: newRecorder(tr)})
	time.Sleep(2500 * time.Millisecond)
	low, high := 1e9, 0.0
	for range 20 {
		_, s := lagMetrics(t, r)
		low, high = min(low, s), max(high, s)
		time.Sleep(10 * time.Millisecond)
	}
	if low < 2 {
		t.Fatalf("2.5 s of connections that never delivered a frame: lag_seconds between %v and %v; want >= 2 throughout", low, high)
	}
}
