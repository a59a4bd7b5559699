package firehose_test

import (
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
)

// lagMetrics reads the lag gauges as Prometheus scrapes them.
func lagMetrics(t *testing.T, r *runner) (events, seconds float64) {
	t.Helper()
	return metrictest.Value(t, r.reg, "spaces_authz_lag_events"), metrictest.Value(t, r.reg, "spaces_authz_lag_seconds")
}

// disconnect takes the PDS down: open connections are cut and new ones
// refused, until the returned function brings it back.
func disconnect(t *testing.T, pds *fakepds.Server, r *runner) func() {
	t.Helper()
	pds.Refuse(true)
	pds.Drop()
	waitFor(t, "disconnected", func() bool { up, _ := r.client.Connected(); return !up })
	return func() { pds.Refuse(false) }
}

// TestLagIsZeroWhenCaughtUpAndGrowsWhileDisconnected: an idle PDS is not
// lag (the last event is older than the quiet period, lag is 0); a dead
// link is, whether or not anything was pending when it died, and it grows
// with the wall clock until the stream is back and caught up.
func TestLagIsZeroWhenCaughtUpAndGrowsWhileDisconnected(t *testing.T) {
	pds := fakepds.New(t)
	alice, err := pds.CreateAccount("alice")
	if err != nil {
		t.Fatal(err)
	}
	tr := checkpoint.NewTracker(0, 0, nil)
	r := start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: newRecorder(tr)})
	waitFor(t, "caught up", func() bool { return tr.Watermark() == pds.Head() })

	// Caught up and idle: 0, though the newest event is older than the
	// quiet period.
	time.Sleep(firehose.QuietPeriod + 200*time.Millisecond)
	if ev, s := lagMetrics(t, r); ev != 0 || s != 0 {
		t.Fatalf("caught up and idle: lag %v events, %vs; want 0, 0", ev, s)
	}

	// The link dies; the PDS goes on. The lag grows from the disconnection.
	reconnect := disconnect(t, pds, r)
	for i := range 3 {
		if _, _, err := pds.Commit(alice.DID(), postWrite(rkey(i))); err != nil {
			t.Fatal(err)
		}
	}
	_, s1 := lagMetrics(t, r)
	time.Sleep(1200 * time.Millisecond)
	ev2, s2 := lagMetrics(t, r)
	if s1 <= 0 || s2 < s1+1 {
		t.Fatalf("disconnected: lag %vs then %vs 1.2s later; want it growing with the clock", s1, s2)
	}
	// The head the PDS announced last is all the consumer can know.
	if l := r.source.Lag(); l.Connected || l.Head != tr.Watermark() || ev2 != 0 {
		t.Fatalf("disconnected: %+v, lag_events %v", l, ev2)
	}

	// Back: the stream reveals the new head, and once it is applied and the
	// stream is quiet, the lag is 0 again.
	reconnect()
	waitFor(t, "new head seen", func() bool { return r.source.Head() == pds.Head() })
	waitFor(t, "caught up again", func() bool { ev, s := lagMetrics(t, r); return ev == 0 && s == 0 })
	if tr.Watermark() != pds.Head() {
		t.Fatalf("watermark %d, head %d", tr.Watermark(), pds.Head())
	}
}

// TestLagEventsCountsAgainstTheHead: events read and not applied are lag,
// and it does not fall to 0 when the link dies; once they are applied
// while still disconnected, lag_events is 0 (nothing more is known of the
// head) but lag_seconds keeps growing: caught up cannot be known.
func TestLagEventsCountsAgainstTheHead(t *testing.T) {
	pds := fakepds.New(t)
	if _, err := pds.CreateAccount("bob"); err != nil {
		t.Fatal(err)
	}
	head := pds.Head()
	tr := checkpoint.NewTracker(0, 0, nil)
	rec := newRecorder(tr)
	rec.hold = true
	r := start(t, firehose.Config{URL: pds.URL(), Tracker: tr, Handler: rec})
	waitFor(t, "all read", func() bool { return tr.InFlight() == int(head) && len(rec.snapshot()) == int(head) })
	if ev, s := lagMetrics(t, r); ev != float64(head) || s < 0 {
		t.Fatalf("%d events held: lag %v events, %vs", head, ev, s)
	}

	disconnect(t, pds, r)
	time.Sleep(100 * time.Millisecond)
	if ev, _ := lagMetrics(t, r); ev != float64(head) {
		t.Fatalf("disconnected with %d events held: lag_events %v", head, ev)
	}
	for _, ev := range rec.snapshot() {
		tr.Done(ev.Seq)
	}
	_, s1 := lagMetrics(t, r)
	time.Sleep(firehose.QuietPeriod + 200*time.Millisecond)
	ev2, s2 := lagMetrics(t, r)
	if ev2 != 0 || s2 < s1+2 {
		t.Fatalf("applied while disconnected: lag %v events, %vs (%vs before); want 0 events and the seconds growing", ev2, s2, s1)
	}
}
