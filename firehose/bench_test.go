package firehose_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/events"
	"github.com/bluesky-social/indigo/events/schedulers/sequential"
	"github.com/gorilla/websocket"
	car "github.com/ipld/go-car"
	cbg "github.com/whyrusleeping/cbor-gen"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/tools/capture"
	"github.com/spaces-authz/spaces-authz/internal/tools/replay"
	"github.com/spaces-authz/spaces-authz/internal/tools/synth"
	"github.com/spaces-authz/spaces-authz/view"
)

// indigoFullDecode is what a consumer built on indigo does with a frame:
// decode header and body, read the CAR, and decode every record.
func indigoFullDecode(b []byte) (records int, err error) {
	r := cbg.NewCborReader(bytes.NewReader(b))
	var h events.EventHeader
	if err := h.UnmarshalCBOR(r); err != nil {
		return 0, err
	}
	if h.MsgType != "#commit" {
		return 0, nil
	}
	var c comatproto.SyncSubscribeRepos_Commit
	if err := c.UnmarshalCBOR(r); err != nil {
		return 0, err
	}
	return decodeAllRecords(&c)
}

func decodeAllRecords(c *comatproto.SyncSubscribeRepos_Commit) (int, error) {
	cr, err := car.NewCarReader(bytes.NewReader(c.Blocks))
	if err != nil {
		return 0, err
	}
	blocks := map[string][]byte{}
	for {
		blk, err := cr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		blocks[blk.Cid().KeyString()] = blk.RawData()
	}
	n := 0
	for _, op := range c.Ops {
		if op.Cid == nil {
			continue
		}
		if _, err := atdata.UnmarshalCBOR(blocks[op.Cid.String()]); err == nil {
			n++
		}
	}
	return n, nil
}

func loadFrames(b *testing.B, which string) [][]byte {
	b.Helper()
	if which == "synthetic" { // the synthetic mix without the frames that match the rules
		rules := view.DefaultRules()
		var out [][]byte
		for _, f := range loadFrames(b, "synthetic-mix") {
			fr, err := firehose.DecodeFrame(f, rules.MatchPath)
			if err == nil && fr.Event != nil && len(fr.Event.Ops) == 0 {
				out = append(out, f)
			}
		}
		return out
	}
	if which == "relay-corpus" {
		f, err := capture.ReadFile("../testdata/relay-2026-07-04/frames.bin.zst")
		if err != nil {
			b.Fatal(err)
		}
		return f
	}
	var out [][]byte
	if _, err := synth.Generate(synth.Options{Events: 3000, Accounts: 300, Seed: 7}, func(f []byte) error {
		out = append(out, f)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkDecodeNoMatch compares, on the same frames in the same run, the
// consumer's path when no op matches the rules (header and ops decoded, the
// CAR never touched) with indigo's full decode of every record. It reports
// both rates and their ratio (target ≥ 10×, DESIGN §10). "synthetic" is
// the synthetic stream without the ~3% of frames that touch projected
// records; "synthetic-mix" keeps them (the consumer then reads their CARs).
func BenchmarkDecodeNoMatch(b *testing.B) {
	rules := view.DefaultRules()
	for _, which := range []string{"relay-corpus", "synthetic", "synthetic-mix"} {
		frames := loadFrames(b, which)
		b.Run(which, func(b *testing.B) {
			const rounds = 20
			var ours, theirs time.Duration
			for range b.N {
				start := time.Now()
				for range rounds {
					for _, f := range frames {
						fr, err := firehose.DecodeFrame(f, rules.MatchPath)
						if err != nil {
							b.Fatal(err)
						}
						fr.DecodeRecords()
					}
				}
				ours += time.Since(start)
				start = time.Now()
				for range rounds {
					for _, f := range frames {
						if _, err := indigoFullDecode(f); err != nil {
							b.Fatal(err)
						}
					}
				}
				theirs += time.Since(start)
			}
			n := float64(b.N * rounds * len(frames))
			b.ReportMetric(n/ours.Seconds(), "ours-frames/s")
			b.ReportMetric(n/theirs.Seconds(), "indigo-full-frames/s")
			b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ratio")
		})
	}
}

// BenchmarkStreamNoMatch is the same comparison end to end, over a real
// websocket from the replay server: the firehose client (lanes, tracker,
// filter) against indigo's HandleRepoStream with the sequential scheduler
// and a full decode of every record. Both share the machine with the server.
func BenchmarkStreamNoMatch(b *testing.B) {
	rules := view.DefaultRules()
	for _, which := range []string{"relay-corpus", "synthetic"} {
		raw := loadFrames(b, which)
		frames, _ := replay.Prepare(raw)
		loops := max(1, 30000/len(frames))
		b.Run(which, func(b *testing.B) {
			var ours, theirs time.Duration
			total := 0
			for range b.N {
				srv, err := replay.New(frames, loops, "")
				if err != nil {
					b.Fatal(err)
				}
				total += srv.Total()
				ours += timeOurs(b, srv, rules)
				theirs += timeIndigo(b, srv)
				_ = srv.Close()
			}
			b.ReportMetric(float64(total)/ours.Seconds(), "ours-frames/s")
			b.ReportMetric(float64(total)/theirs.Seconds(), "indigo-full-frames/s")
			b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ratio")
		})
	}
}

type doneHandler struct{ tr *checkpoint.Tracker }

func (h doneHandler) HandleEvent(_ context.Context, ev *firehose.Event) error {
	h.tr.Done(ev.Seq)
	return nil
}
func (h doneHandler) HandleInfo(context.Context, firehose.Info) error { return nil }

func timeOurs(b *testing.B, srv *replay.Server, rules *view.Rules) time.Duration {
	tr := checkpoint.NewTracker(0, 0, nil)
	c, err := firehose.New(firehose.Config{URL: srv.URL(), Tracker: tr, Handler: doneHandler{tr}, Filter: rules.MatchPath,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() { _ = c.Run(ctx); close(done) }()
	for tr.Watermark() < srv.LastSeq() {
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	cancel()
	<-done
	return took
}

func timeIndigo(b *testing.B, srv *replay.Server) time.Duration {
	u := "ws" + srv.URL()[len("http"):] + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
	conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	last := int64(0)
	finished := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rsc := &events.RepoStreamCallbacks{
		RepoCommit: func(evt *comatproto.SyncSubscribeRepos_Commit) error {
			if _, err := decodeAllRecords(evt); err != nil {
				return err
			}
			return mark(&mu, &last, evt.Seq, srv.LastSeq(), finished)
		},
		RepoIdentity: func(evt *comatproto.SyncSubscribeRepos_Identity) error {
			return mark(&mu, &last, evt.Seq, srv.LastSeq(), finished)
		},
		RepoAccount: func(evt *comatproto.SyncSubscribeRepos_Account) error {
			return mark(&mu, &last, evt.Seq, srv.LastSeq(), finished)
		},
	}
	start := time.Now()
	go func() {
		_ = events.HandleRepoStream(ctx, conn, sequential.NewScheduler("bench", rsc.EventHandler),
			slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	<-finished
	took := time.Since(start)
	cancel()
	_ = conn.Close()
	return took
}

func mark(mu *sync.Mutex, last *int64, seq, target int64, finished chan struct{}) error {
	mu.Lock()
	defer mu.Unlock()
	*last = seq
	if seq == target {
		close(finished)
	}
	return nil
}
