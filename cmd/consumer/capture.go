package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/tools/capture"
	"github.com/spaces-authz/spaces-authz/internal/tools/replay"
	"github.com/spaces-authz/spaces-authz/internal/tools/synth"
)

// passHandler completes every event at once (capture needs no projection).
type passHandler struct{ tr *checkpoint.Tracker }

func (h passHandler) HandleEvent(_ context.Context, ev *firehose.Event) error {
	h.tr.Done(ev.Seq)
	return nil
}

func (h passHandler) HandleInfo(context.Context, firehose.Info) error { return nil }

// cmdCapture records raw frames exactly as received, in the corpus format.
func cmdCapture(ctx context.Context, args []string) error {
	var pdsURL, out, cursorFile string
	var cursor int64
	var frames int
	var dur time.Duration
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	fs.StringVar(&pdsURL, "pds-url", "", "PDS (or relay) URL (required)")
	fs.StringVar(&out, "out", "", "capture file to write: zstd of [u32 LE length][frame]... (required)")
	fs.Int64Var(&cursor, "cursor", -1, "start after this seq (-1: live)")
	fs.StringVar(&cursorFile, "cursor-file", "", "resume from and save the position in this file (atomic writes)")
	fs.IntVar(&frames, "frames", 0, "stop after this many frames (0: until Ctrl-C)")
	fs.DurationVar(&dur, "duration", 0, "stop after this long (0: until Ctrl-C)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if pdsURL == "" || out == "" {
		return &exitError{code: 2, err: errors.New("--pds-url and --out are required")}
	}
	// Checked before --out is created: a typo must not truncate a capture.
	if err := checkURL("pds-url", pdsURL, "http", "https", "ws", "wss"); err != nil {
		return err
	}
	var store *checkpoint.File
	if cursorFile != "" {
		store = &checkpoint.File{Path: cursorFile}
		c, err := store.Load(ctx)
		if err != nil {
			return err
		}
		if c != checkpoint.None {
			cursor = c
		}
	}
	w, err := capture.Create(out)
	if err != nil {
		return err
	}
	tr := checkpoint.NewTracker(cursor, 0, nil)
	var n atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if dur > 0 {
		ctx, cancel = context.WithTimeout(ctx, dur)
		defer cancel()
	}
	var werr error
	client, err := firehose.New(firehose.Config{URL: pdsURL, Tracker: tr, Handler: passHandler{tr},
		Filter: func(string) bool { return false },
		OnFrame: func(b []byte) {
			if werr == nil {
				werr = w.Write(b)
			}
			if k := n.Add(1); frames > 0 && k >= int64(frames) {
				cancel()
			}
		}})
	if err != nil {
		return err
	}
	runErr := client.Run(ctx)
	if err := w.Close(); err != nil && werr == nil {
		werr = err
	}
	if store != nil && tr.Watermark() >= 0 {
		if err := store.Save(context.Background(), tr.Watermark()); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "captured %d frames to %s (last seq %d)\n", n.Load(), out, tr.Highest())
	return errors.Join(runErr, werr)
}

// cmdReplay serves a capture over a websocket, at full speed.
func cmdReplay(ctx context.Context, args []string) error {
	var addr string
	var loops int
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.StringVar(&addr, "addr", "127.0.0.1:0", "address to serve on")
	fs.IntVar(&loops, "loops", 1, "serve the capture this many times, rewriting seqs (seq + loop × span)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &exitError{code: 2, err: errors.New("usage: consumer replay [--addr A] [--loops N] FILE")}
	}
	raw, err := capture.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	frames, err := replay.Prepare(raw)
	if err != nil {
		return err
	}
	srv, err := replay.New(frames, loops, addr)
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Printf("serving %d frames (%d × %d) at %s/xrpc/com.atproto.sync.subscribeRepos; last seq %d\n",
		srv.Total(), loops, len(frames), srv.URL(), srv.LastSeq())
	<-ctx.Done()
	fmt.Printf("sent %d frames\n", srv.Sent())
	return nil
}

// cmdSynth writes a synthetic stream capture.
func cmdSynth(_ context.Context, args []string) error {
	var o synth.Options
	var out string
	fs := flag.NewFlagSet("synth", flag.ContinueOnError)
	fs.StringVar(&out, "out", "", "capture file to write (required)")
	fs.IntVar(&o.Events, "events", 100000, "frames (commits) to generate")
	fs.IntVar(&o.Accounts, "accounts", 1000, "repos")
	fs.Float64Var(&o.Projected, "projected", 0.03, "share of commits touching space, group or relation records")
	fs.Uint64Var(&o.Seed, "seed", 1, "random seed")
	if err := parse(fs, args); err != nil {
		return err
	}
	if out == "" {
		return &exitError{code: 2, err: errors.New("--out is required")}
	}
	start := time.Now()
	st, err := synth.Write(out, o)
	if err != nil {
		return err
	}
	fmt.Printf("wrote %d frames (%d projected ops, %d others) to %s in %v\n", st.Frames, st.ProjectedOps, st.OtherOps,
		out, time.Since(start).Round(time.Millisecond))
	return nil
}
