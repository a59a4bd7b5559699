//go:build e2e

package federation_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/federation"
	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
)

const thingColl = "com.example.relay.thing"

// collector is a firehose.Handler that hands every event to the test.
type collector struct {
	tracker *checkpoint.Tracker
	events  chan *firehose.Event
}

func (c *collector) HandleEvent(ctx context.Context, ev *firehose.Event) error {
	select {
	case c.events <- ev:
	case <-ctx.Done():
	}
	c.tracker.Done(ev.Seq)
	return nil
}

func (c *collector) HandleInfo(_ context.Context, info firehose.Info) error {
	return fmt.Errorf("unexpected #info %s: %s", info.Name, info.Message)
}

// subscription is the project's firehose client reading the relay.
type subscription struct {
	events <-chan *firehose.Event
	stop   func() error
}

// subscribe reads url with the project's firehose client from cursor
// (checkpoint.None: live), and returns once the connection is up.
func subscribe(t *testing.T, url string, cursor int64) *subscription {
	t.Helper()
	tr := checkpoint.NewTracker(cursor, 0, nil)
	col := &collector{tracker: tr, events: make(chan *firehose.Event, 1024)}
	c, err := firehose.New(firehose.Config{URL: url, Tracker: tr, Handler: col,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	s := &subscription{events: col.events, stop: func() error {
		once.Do(func() {
			cancel()
			if runErr = <-done; errors.Is(runErr, context.Canceled) {
				runErr = nil
			}
		})
		return runErr
	}}
	t.Cleanup(func() { _ = s.stop() })
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("firehose on %s ended before connecting: %v", url, err)
	case <-time.After(15 * time.Second):
		t.Fatalf("firehose on %s: not connected after 15s", url)
	}
	return s
}

// want is a record create expected on the relay's stream.
type want struct{ did, path, name string }

// await reads the subscription until every wanted create has arrived as a
// #commit of its DID with the record's content, and returns the highest
// relay seq read.
func (s *subscription) await(t *testing.T, what string, wants ...want) int64 {
	t.Helper()
	pending := map[want]bool{}
	for _, w := range wants {
		pending[w] = true
	}
	var seen []string
	var last int64
	timeout := time.After(30 * time.Second)
	for len(pending) > 0 {
		select {
		case ev := <-s.events:
			last = max(last, ev.Seq)
			seen = append(seen, fmt.Sprintf("seq=%d %s %s ops=%d", ev.Seq, ev.Kind, ev.DID, len(ev.Ops)))
			if ev.Kind != firehose.KindCommit {
				continue
			}
			for _, op := range ev.Ops {
				name, _ := op.Record["name"].(string)
				w := want{did: ev.DID, path: op.Path(), name: name}
				if op.Action == firehose.ActionCreate && op.Err == nil && pending[w] {
					delete(pending, w)
				}
			}
		case <-timeout:
			t.Fatalf("%s: the relay did not carry %v within 30s; events read: %v", what, pending, seen)
		}
	}
	return last
}

// write creates a record named name at rkey on p and returns what the relay
// should carry for it.
func write(ctx context.Context, t *testing.T, p *localpds.PDS, sess localpds.Session, rkey, name string) want {
	t.Helper()
	if _, err := p.Client().CreateRecord(ctx, sess, thingColl, rkey, map[string]any{"$type": thingColl, "name": name}); err != nil {
		t.Fatalf("create %s/%s on %s: %v", thingColl, rkey, p.URL, err)
	}
	return want{did: sess.DID, path: thingColl + "/" + rkey, name: name}
}

// TestRelayCarriesBothPDSs: indigo's relay, subscribed to two reference
// PDSs on one PLC, carries commits of accounts on both through its own
// subscribeRepos, read by the project's firehose client, and keeps doing so
// after a SIGKILL and restart; after a clean stop it replays what the PDSs
// wrote while it was down.
func TestRelayCarriesBothPDSs(t *testing.T) {
	t0 := time.Now()
	s := federation.Start(t)
	t.Logf("stack (PLC, 2 PDSs, relay subscribed to both) up in %s", time.Since(t0).Round(time.Millisecond))
	ctx := t.Context()

	sub := subscribe(t, s.Relay.SubscribeReposURL(), checkpoint.None)
	alice, err := s.A.Client().CreateAccount(ctx, "alice.test", "alice@example.com", "password")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := s.B.Client().CreateAccount(ctx, "bob.test", "bob@example.com", "password")
	if err != nil {
		t.Fatal(err)
	}
	sub.await(t, "before any restart",
		write(ctx, t, s.A, alice, "a1", "from A"),
		write(ctx, t, s.B, bob, "b1", "from B"))

	// SIGKILL: the relay loses whatever it had not flushed; a new reader
	// connects after the restart and must see new commits of both PDSs.
	s.Relay.Kill()
	if err := sub.stop(); err != nil {
		t.Fatalf("firehose client: %v", err)
	}
	t1 := time.Now()
	s.Relay.Start()
	t.Logf("relay restarted and resubscribed in %s", time.Since(t1).Round(time.Millisecond))
	sub = subscribe(t, s.Relay.SubscribeReposURL(), checkpoint.None)
	last := sub.await(t, "after Kill and Start",
		write(ctx, t, s.A, alice, "a2", "from A after kill"),
		write(ctx, t, s.B, bob, "b2", "from B after kill"))
	if err := sub.stop(); err != nil {
		t.Fatalf("firehose client: %v", err)
	}

	// A clean stop persists the relay's cursor on each PDS: what they write
	// while it is down is replayed to it when it comes back, and to a reader
	// resuming from the last relay seq it read.
	s.Relay.Stop()
	whileDown := []want{
		write(ctx, t, s.A, alice, "a3", "from A while the relay is down"),
		write(ctx, t, s.B, bob, "b3", "from B while the relay is down"),
	}
	s.Relay.Start()
	sub = subscribe(t, s.Relay.SubscribeReposURL(), last)
	sub.await(t, "written while the relay was stopped", whileDown...)
}
