package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestFormatProgress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		done, total int
		rate        float64
		elapsed     time.Duration
		want        string
	}{
		{1234, 5000, 310, 4 * time.Second, "rebuild: 1234/5000 repos (24.7%), 310 repos/s, ETA 12s"},
		{0, 5000, 0, 0, "rebuild: 0/5000 repos (0.0%), 0 repos/s, ETA unknown"},
		{5000, 5000, 55.6, 90 * time.Second, "rebuild: 5000/5000 repos (100.0%), 56 repos/s, done in 1m30s"},
		{300, 0, 150, 2 * time.Second, "rebuild: 300 repos, 150 repos/s"},
	} {
		if got := formatProgress("rebuild", tc.done, tc.total, tc.rate, tc.elapsed); got != tc.want {
			t.Errorf("formatProgress(%d, %d, %v) = %q, want %q", tc.done, tc.total, tc.elapsed, got, tc.want)
		}
	}
}

// TestProgressThrottles: the line is redrawn at most every 500 ms, with
// \r, and Finish ends it with the final numbers.
func TestProgressThrottles(t *testing.T) {
	t.Parallel()
	var w bytes.Buffer
	now := time.Unix(1000, 0)
	p := newProgress(&w, true, "reconcile")
	p.now = func() time.Time { return now }
	for i := 10; i < 110; i++ { // 100 updates over 1 s: 10 ms apart, from 10 repos done
		p.Update(min(i, 100), 100)
		now = now.Add(10 * time.Millisecond)
	}
	draws := strings.Count(w.String(), "\r")
	if draws != 2 { // at 0 ms and 500 ms
		t.Errorf("%d draws in 1 s of updates every 10 ms, want 2:\n%q", draws, w.String())
	}
	p.Update(100, 100)
	p.Finish()
	out := w.String()
	if !strings.HasSuffix(out, "\rreconcile: 100/100 repos (100.0%), 90 repos/s, done in 1s\x1b[K\n") {
		t.Errorf("the last draw: %q", out[strings.LastIndex(out, "\r"):])
	}
	// The rate counts what was seen done: 50 repos in 500 ms.
	if !strings.HasPrefix(out, "\rreconcile: 10/100 repos (10.0%), 0 repos/s, ETA unknown\x1b[K"+
		"\rreconcile: 60/100 repos (60.0%), 100 repos/s, ETA 0s\x1b[K") {
		t.Errorf("the first draws: %q", out)
	}
}

// TestProgressOffWithoutTerminal: not a terminal, nothing is written.
func TestProgressOffWithoutTerminal(t *testing.T) {
	t.Parallel()
	var w bytes.Buffer
	p := newProgress(&w, false, "rebuild")
	p.Update(1, 10)
	p.Update(10, 10)
	p.Finish()
	if p != nil || w.Len() != 0 {
		t.Errorf("wrote %q to a writer that is not a terminal", w.String())
	}
	// A test's stderr is a file or a pipe, never a terminal: the live line
	// stays off there.
	if stderrIsTerminal() {
		t.Skip("stderr is a terminal here")
	}
}
