package fanout_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/natstest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

const relC = "com.atproto.space.relation"

type received struct {
	subject string
	msgID   string
	msg     fanout.Message
	raw     []byte
}

// readAll reads every message of the stream with a durable pull consumer.
func readAll(t *testing.T, url, durable string, want int) []received {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cons, err := js.CreateOrUpdateConsumer(t.Context(), fanout.DefaultStream, jetstream.ConsumerConfig{Durable: durable,
		AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "spaces.v1.>"})
	if err != nil {
		t.Fatal(err)
	}
	var out []received
	deadline := time.Now().Add(20 * time.Second)
	for len(out) < want && time.Now().Before(deadline) {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var msg fanout.Message
			if err := json.Unmarshal(m.Data(), &msg); err != nil {
				t.Fatalf("payload: %v", err)
			}
			out = append(out, received{subject: m.Subject(), msgID: m.Headers().Get(jetstream.MsgIDHeader), msg: msg, raw: m.Data()})
			_ = m.Ack()
		}
	}
	// nothing more arrives
	batch, _ := cons.Fetch(10, jetstream.FetchMaxWait(300*time.Millisecond))
	for m := range batch.Messages() {
		t.Fatalf("an extra message: %s %s", m.Subject(), m.Data())
	}
	return out
}

func startWithNATS(e *testenv.Env, url string, reg *prometheus.Registry, mutate ...func(*pipeline.Config)) *testenv.Running {
	return e.Start(append([]func(*pipeline.Config){func(c *pipeline.Config) {
		c.NATS = &fanout.Config{URL: url, Source: "pds.test"}
		c.Registry = reg
	}}, mutate...)...)
}

func schema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(fanout.SchemaJSON))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("change.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("change.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMessagesSubjectsAndSchema(t *testing.T) {
	ns := natstest.InProcess(t)
	e := testenv.New(t)
	alice := testenv.Must(e.PDS.CreateAccount("alice")).DID()
	bob := testenv.Must(e.PDS.CreateAccount("bob")).DID()
	reg := prometheus.NewRegistry()
	r := startWithNATS(e, ns.ClientURL(), reg)
	_, seq1, _ := e.PDS.Commit(alice, testenv.Space("create", "s", false), testenv.Relation("create", "v", "space", alice+"/s", "viewer", "acct", bob, ""))
	// bob's hostile record: a change with no relationships and a dead letter
	_, seq2, _ := e.PDS.Commit(bob, testenv.Relation("create", "h", "space", alice+"/s", "admin", "acct", bob, ""))
	_, seq3, _ := e.PDS.Commit(alice, testenv.Relation("update", "v", "space", alice+"/s", "editor", "acct", bob, ""))
	_, seq4, _ := e.PDS.Commit(alice, testenv.Delete(relC, "v"))
	e.WaitCaughtUp(r)
	msgs := readAll(t, ns.ClientURL(), "test", 6)
	if len(msgs) != 6 {
		t.Fatalf("%d messages, want 6", len(msgs))
	}
	sch := schema(t)
	for _, m := range msgs {
		var v any
		_ = json.Unmarshal(m.raw, &v)
		if err := sch.Validate(v); err != nil {
			t.Fatalf("%s does not match the JSON Schema: %v", m.raw, err)
		}
		if m.msg.ZedToken == "" || m.msg.DID == "" || m.msg.Rev == "" {
			t.Fatalf("incomplete payload %s", m.raw)
		}
		if strings.Contains(m.subject, "did:") {
			t.Fatalf("a DID in subject %s", m.subject)
		}
	}
	want := []struct {
		subject, id string
		seq         int64
		rels        int
	}{
		{"spaces.v1.change.create.com.atproto.space.space", "pds.test:" + itoa(seq1) + ":0", seq1, 2},
		{"spaces.v1.change.create.com.atproto.space.relation", "pds.test:" + itoa(seq1) + ":1", seq1, 1},
		{"spaces.v1.change.create.com.atproto.space.relation", "pds.test:" + itoa(seq2) + ":0", seq2, 0},
		{"spaces.v1.rejected.foreign_resource", "pds.test:" + itoa(seq2) + ":0:rejected", seq2, 0},
		{"spaces.v1.change.update.com.atproto.space.relation", "pds.test:" + itoa(seq3) + ":0", seq3, 1},
		{"spaces.v1.change.delete.com.atproto.space.relation", "pds.test:" + itoa(seq4) + ":0", seq4, 0},
	}
	for i, w := range want {
		m := msgs[i]
		if m.subject != w.subject || m.msgID != w.id || m.msg.Seq != w.seq || len(m.msg.Relationships) != w.rels {
			t.Errorf("message %d: %s %s seq %d rels %v; want %s %s seq %d %d rels", i, m.subject, m.msgID, m.msg.Seq,
				m.msg.Relationships, w.subject, w.id, w.seq, w.rels)
		}
	}
	if got := msgs[4].msg.Relationships[0]; got != "spaces_authz/space:"+view.ObjectID(alice, "s")+"#editor@spaces_authz/acct:"+view.EncodeDID(bob) {
		t.Errorf("update's relationship %s", got)
	}
	if msgs[2].msg.Rejected == nil || msgs[2].msg.Rejected.Reason != "foreign_resource" {
		t.Errorf("rejected change: %+v", msgs[2].msg)
	}
	if msgs[1].msg.Record == nil || msgs[5].msg.Record != nil {
		t.Error("records: present on create, absent on delete")
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestRewindReplayIsDeduplicated rewinds the cursor and replays: every
// change is re-published with the same Msg-Id, JetStream reports them as
// duplicates, and a downstream consumer sees each change once.
func TestRewindReplayIsDeduplicated(t *testing.T) {
	ns := natstest.InProcess(t)
	e := testenv.New(t)
	alice := testenv.Must(e.PDS.CreateAccount("alice")).DID()
	for i := range 10 {
		_, _, _ = e.PDS.Commit(alice, testenv.Space("create", "s"+itoa(int64(i)), i%2 == 0))
	}
	reg := prometheus.NewRegistry()
	r := startWithNATS(e, ns.ClientURL(), reg)
	e.WaitCaughtUp(r)
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	// The same Move `consumer rewind --to 0` does.
	lease := spice.LeaseConfig{Client: e.Client, Name: "default", Holder: "rewinder"}
	if _, err := spice.MoveProgress(t.Context(), lease, func(st checkpoint.State) (checkpoint.Step, error) {
		return checkpoint.Rewind("default", st, 0)
	}); err != nil {
		t.Fatal(err)
	}
	reg2 := prometheus.NewRegistry()
	r2 := startWithNATS(e, ns.ClientURL(), reg2)
	e.WaitCaughtUp(r2)
	// The stream goes on after the replay.
	_, _, _ = e.PDS.Commit(alice, testenv.Space("create", "late", false))
	e.WaitCaughtUp(r2)
	e.AssertMatchesOracle()
	dups := metrictest.Value(t, reg2, "spaces_authz_nats_publishes_total", "result", "duplicate")
	if dups < 10 {
		t.Fatalf("JetStream reported %v duplicates on the replay, want at least 10", dups)
	}
	msgs := readAll(t, ns.ClientURL(), "after-rewind", 11)
	seen := map[string]bool{}
	for _, m := range msgs {
		if seen[m.msgID] {
			t.Fatalf("downstream saw %s twice", m.msgID)
		}
		seen[m.msgID] = true
	}
	if len(msgs) != 11 {
		for _, m := range msgs {
			t.Log(m.msgID, m.subject)
		}
		t.Fatalf("downstream saw %d changes, want 11", len(msgs))
	}
}

// TestRawModePublishesEveryCollection: the daemon doubles as a firehose →
// JetStream bridge.
func TestRawModePublishesEveryCollection(t *testing.T) {
	ns := natstest.InProcess(t)
	e := testenv.New(t)
	alice := testenv.Must(e.PDS.CreateAccount("alice")).DID()
	r := startWithNATS(e, ns.ClientURL(), prometheus.NewRegistry(), func(c *pipeline.Config) { c.Engine.PublishAllCollections = true })
	_, _, _ = e.PDS.Commit(alice, fakepds.Write{Action: "create", Collection: "app.bsky.feed.post", RKey: "p1",
		Value: map[string]any{"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-01-01T00:00:00Z"}},
		testenv.Space("create", "s", false))
	e.WaitCaughtUp(r)
	msgs := readAll(t, ns.ClientURL(), "raw", 2)
	if len(msgs) != 2 || msgs[0].subject != "spaces.v1.change.create.app.bsky.feed.post" || msgs[0].msg.Projected ||
		!msgs[1].msg.Projected {
		t.Fatalf("raw mode: %+v", msgs)
	}
	e.AssertMatchesOracle()
}
