package fanout_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/natstest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/view"
)

// BenchmarkPublishAcked measures fan-out alone: messages per second
// published to JetStream (file storage, in-process server) with every ack
// awaited, in batches of 1,000 changes as the projector hands them over.
func BenchmarkPublishAcked(b *testing.B) {
	ns := natstest.InProcess(b)
	p, err := fanout.Connect(context.Background(), fanout.Config{URL: ns.ClientURL(), Source: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.Run(ctx) }()
	tuple := view.Tuple{ResourceType: "space", ResourceID: "did|plc|a/s", Relation: "viewer", SubjectType: "acct", SubjectID: "did|plc|b"}
	const batch = 1000
	seq := int64(0)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		changes := make([]view.Change, batch)
		for i := range changes {
			seq++
			changes[i] = view.Change{Seq: seq, DID: "did:plc:alice", Rev: "3kabcdefghij2", Collection: "com.atproto.space.relation",
				RKey: fmt.Sprint(seq), Action: "create", CID: "bafyreib", Projected: true, Produces: []view.Tuple{tuple},
				Record: map[string]any{"resourceType": "space", "resource": "did:plc:a/s", "permission": "viewer",
					"subjectType": "acct", "subject": "did:plc:b"}}
		}
		done := make(chan struct{})
		if err := p.Publish(ctx, changes, "zedtoken", func() { close(done) }); err != nil {
			b.Fatal(err)
		}
		<-done
	}
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkProjectionWithAndWithoutNATS projects the same stream (2,000
// commits of 5 relation records each, into a real SpiceDB) with fan-out off
// and on, so the cost of fan-out shows against the projection rate.
func BenchmarkProjectionWithAndWithoutNATS(b *testing.B) {
	const commits, perCommit = 2000, 5
	e := testenv.New(b)
	var dids []string
	for i := range 20 {
		dids = append(dids, testenv.Must(e.PDS.CreateAccount(fmt.Sprintf("u%02d", i))).DID())
	}
	for c := range commits {
		did := dids[c%len(dids)]
		var ws []fakepds.Write
		if c < len(dids) {
			ws = append(ws, testenv.Space("create", "s", false))
		}
		for k := range perCommit {
			ws = append(ws, testenv.Relation("create", fmt.Sprintf("r%d-%d", c, k), "space", did+"/s", "viewer", "acct",
				dids[(c+k+1)%len(dids)], ""))
		}
		if _, _, err := e.PDS.Commit(did, ws...); err != nil {
			b.Fatal(err)
		}
	}
	ns := natstest.InProcess(b)
	for _, withNATS := range []bool{false, true} {
		b.Run(fmt.Sprintf("nats=%v", withNATS), func(b *testing.B) {
			for range b.N {
				env := e.Fork()
				env.StoreCursor(0)
				var nc *fanout.Config
				if withNATS {
					nc = &fanout.Config{URL: ns.ClientURL(), Source: fmt.Sprintf("bench-%d", time.Now().UnixNano())}
				}
				start := time.Now()
				r := env.Start(func(c *pipeline.Config) {
					c.NATS, c.Registry, c.Engine.FlushEvery = nc, prometheus.NewRegistry(), time.Second
				})
				env.WaitCaughtUp(r)
				took := time.Since(start)
				b.StopTimer()
				_ = r.Stop()
				b.ReportMetric(float64(commits*perCommit)/took.Seconds(), "records/s")
				b.StartTimer()
			}
		})
	}
}
