//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/natstest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/workload"
)

// TestFanOutSurvivesKillsAndNATSOutage writes a workload through the real
// PDS while the consumer (publishing to a real nats-server) is killed with
// SIGKILL again and again, and while NATS is stopped for a while. A
// downstream durable consumer must then have received every record change
// exactly once, and the consumer must not have advanced during the outage.
func TestFanOutSurvivesKillsAndNATSOutage(t *testing.T) {
	s := newStack(t, stackOpts{})
	nb, err := natstest.StartBinary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nb.Stop)
	var sessions []localpds.Session
	var dids []string
	for i := range 4 {
		sess := s.account(fmt.Sprintf("fan%d", i))
		sessions, dids = append(sessions, sess), append(dids, sess.DID)
	}
	natsArgs := []string{"--nats-url", nb.URL}
	s.startConsumer(natsArgs...)
	s.waitReady()
	// A first write, applied and stored, so every later op travels on the
	// stream (not in a first-run snapshot).
	s.apply(sessions[0], create(spaceC, "first", space(false)))
	s.waitOracle(30 * time.Second)
	waitCursor(t, s, 0)

	seed := uint64(time.Now().UnixNano())
	t.Logf("workload seed %d", seed)
	gen := workload.New(seed, dids, workload.Options{})
	rng := rand.New(rand.NewPCG(seed, 11))
	want := map[string]bool{} // uri + action + cid of every op written
	write := func() {
		st := gen.Next()
		var ws []localpds.Write
		for _, w := range st.Writes {
			ws = append(ws, localpds.Write{Action: w.Action, Collection: w.Collection, RKey: w.RKey, Value: w.Value})
		}
		_, results, err := s.xrpc.ApplyWrites(context.Background(), sessions[st.Account], ws)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range ws {
			if !s.rules.Projects(w.Collection) {
				continue // published in raw mode only
			}
			uri := "at://" + dids[st.Account] + "/" + w.Collection + "/" + w.RKey
			cid := ""
			if i < len(results) {
				cid = results[i].CID
			}
			want[uri+" "+w.Action+" "+cid] = true
		}
	}
	want["at://"+dids[0]+"/"+spaceC+"/first create "+firstCID(t, s, dids[0])] = true

	// Phase 1: kills while writing.
	kills := 0
	for range 10 {
		p := s.startConsumer(natsArgs...)
		for range 10 + rng.IntN(20) {
			write()
		}
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
		p.Kill()
		kills++
	}
	p := s.startConsumer(natsArgs...)
	for range 20 {
		write()
	}
	s.waitOracle(60 * time.Second)

	// Phase 2: NATS stops; writes go on; the consumer must stall.
	nb.Stop()
	stoppedAt := time.Now()
	for range 30 {
		write()
	}
	time.Sleep(2 * time.Second)
	c1 := readCursor(t, s)
	time.Sleep(3 * time.Second)
	c2 := readCursor(t, s)
	if c2 != c1 {
		t.Fatalf("the cursor moved from %d to %d while NATS was down", c1, c2)
	}
	if !p.Running() {
		t.Fatalf("the consumer exited during the NATS outage:\n%s", tail(p.Output(), 2000))
	}
	if err := nb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("NATS was down %v; cursor held at %d", time.Since(stoppedAt).Round(time.Millisecond), c1)
	for range 10 {
		write()
	}
	s.waitOracle(60 * time.Second)
	// SpiceDB matching does not mean the last batches are published: the
	// stored cursor passes an event only once its messages are acknowledged.
	waitCursor(t, s, s.status().HeadSeq)

	// Downstream: every op exactly once.
	got := downstream(t, nb.URL)
	var missing []string
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("%d of %d changes never reached NATS, e.g. %v", len(missing), len(want), missing[:min(5, len(missing))])
	}
	t.Logf("%d kills, a %v NATS outage: %d record changes written, all received downstream exactly once",
		kills, 5*time.Second, len(want))
}

func firstCID(t *testing.T, s *stack, did string) string {
	t.Helper()
	r, err := s.xrpc.GetRecord(context.Background(), did, spaceC, "first")
	if err != nil {
		t.Fatal(err)
	}
	return r.CID
}

func readCursor(t *testing.T, s *stack) int64 {
	t.Helper()
	st, err := s.client.ReadProjector(context.Background(), "default")
	if err != nil {
		t.Fatal(err)
	}
	return st.Progress.Cursor
}

func waitCursor(t *testing.T, s *stack, min int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for readCursor(t, s) < min {
		if time.Now().After(deadline) {
			t.Fatal("no cursor stored")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// downstream reads every change message with a durable pull consumer and
// returns the set of "uri action cid" keys, failing on a repeated Msg-Id;
// it stops after three fetches that bring nothing.
func downstream(t *testing.T, url string) map[string]bool {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cons, err := js.CreateOrUpdateConsumer(context.Background(), fanout.DefaultStream, jetstream.ConsumerConfig{
		Durable: "e2e-downstream", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "spaces.v1.change.>"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	ids := map[string]bool{}
	idle := 0
	for idle < 3 {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			id := m.Headers().Get(jetstream.MsgIDHeader)
			if ids[id] {
				t.Fatalf("message %s delivered twice", id)
			}
			ids[id] = true
			var msg fanout.Message
			if err := json.Unmarshal(m.Data(), &msg); err != nil {
				t.Fatal(err)
			}
			if !msg.Resync {
				got[msg.URI+" "+msg.Action+" "+msg.CID] = true
			}
			_ = m.Ack()
		}
		if n == 0 {
			idle++
		}
	}
	if len(got) == 0 {
		t.Fatal("nothing received downstream")
	}
	return got
}
