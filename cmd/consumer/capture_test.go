package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/spaces-authz/spaces-authz/internal/tools/capture"
	"github.com/spaces-authz/spaces-authz/internal/tools/replay"
)

// TestCaptureRecordsFramesExactly captures the relay corpus served by the
// replay server: the capture holds the very same bytes.
func TestCaptureRecordsFramesExactly(t *testing.T) {
	raw, err := capture.ReadFile("../../testdata/relay-2026-07-04/frames.bin.zst")
	if err != nil {
		t.Fatal(err)
	}
	frames, _ := replay.Prepare(raw)
	srv, err := replay.New(frames, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	out := filepath.Join(t.TempDir(), "cap.zst")
	cursorFile := filepath.Join(t.TempDir(), "cursor")
	if err := cmdCapture(t.Context(), []string{"--pds-url", srv.URL(), "--out", out, "--cursor", "0",
		"--frames", "300", "--cursor-file", cursorFile}); err != nil {
		t.Fatal(err)
	}
	got, err := capture.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 300 {
		t.Fatalf("captured %d frames", len(got))
	}
	for i := range raw {
		if !bytes.Equal(got[i], raw[i]) {
			t.Fatalf("frame %d differs from what was sent", i)
		}
	}
	// the second loop: same frames with seqs moved by the capture's span
	if bytes.Equal(got[150], raw[0]) || len(got[150]) != len(raw[0]) {
		t.Fatal("the looped frame was not rewritten in place")
	}
}
