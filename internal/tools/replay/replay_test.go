package replay_test

import (
	"bytes"
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/tools/capture"
	"github.com/spaces-authz/spaces-authz/internal/tools/replay"
	"github.com/spaces-authz/spaces-authz/internal/tools/synth"
)

type counter struct {
	tr   *checkpoint.Tracker
	mu   sync.Mutex
	seqs []int64
	ops  int
}

func (c *counter) HandleEvent(_ context.Context, ev *firehose.Event) error {
	c.mu.Lock()
	c.seqs = append(c.seqs, ev.Seq)
	c.ops += len(ev.Ops)
	c.mu.Unlock()
	c.tr.Done(ev.Seq)
	return nil
}

func (c *counter) HandleInfo(context.Context, firehose.Info) error { return nil }

func TestSynthCaptureReplayedInLoops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "synth.zst")
	st, err := synth.Write(path, synth.Options{Events: 500, Accounts: 20, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st.Frames != 500 || st.ProjectedOps == 0 || st.OtherOps < 400 {
		t.Fatalf("stats %+v", st)
	}
	raw, err := capture.ReadFile(path)
	if err != nil || len(raw) != 500 {
		t.Fatalf("%d frames, %v", len(raw), err)
	}
	frames, _ := replay.Prepare(raw)
	srv, err := replay.New(frames, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tr := checkpoint.NewTracker(synth.SeqBase+99, 0, nil) // skip the first 100 of the first loop
	c := &counter{tr: tr}
	cl, err := firehose.New(firehose.Config{URL: srv.URL(), Tracker: tr, Handler: c,
		Filter: func(p string) bool { return len(p) > 11 && p[:11] == "com.atproto" }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for tr.Watermark() < srv.LastSeq() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if tr.Watermark() != srv.LastSeq() {
		t.Fatalf("watermark %d, last %d", tr.Watermark(), srv.LastSeq())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seqs) != 1400 {
		t.Fatalf("%d events, want 1400", len(c.seqs))
	}
	seen := map[int64]bool{}
	for _, s := range c.seqs {
		if seen[s] {
			t.Fatalf("seq %d twice", s)
		}
		seen[s] = true
	}
	if c.ops == 0 {
		t.Fatal("no projected op decoded")
	}
}

// The server writes websocket frames itself (batched); gorilla's client
// must read back every payload length class of RFC 6455 byte for byte,
// while pings are answered in between.
func TestFramesReadBackExactly(t *testing.T) {
	sizes := []int{1, 125, 126, 65535, 65536, 300000}
	var raw [][]byte
	for round := range 40 { // enough to span several write batches
		for i, n := range sizes {
			b := make([]byte, n)
			for j := range b {
				b[j] = byte(round*7 + i + j)
			}
			raw = append(raw, b)
		}
	}
	frames, _ := replay.Prepare(raw)
	srv, err := replay.New(frames, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	conn, _, err := websocket.DefaultDialer.Dial("ws"+srv.URL()[len("http"):]+"/xrpc/com.atproto.sync.subscribeRepos", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadLimit(1 << 20)
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i, want := range raw {
		if i%10 == 0 {
			if err := conn.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		mt, got, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if mt != websocket.BinaryMessage || !bytes.Equal(got, want) {
			t.Fatalf("frame %d: type %d, %d bytes, want binary %d bytes", i, mt, len(got), len(want))
		}
	}
}
