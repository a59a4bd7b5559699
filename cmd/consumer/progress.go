package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// progressEvery is how often the live progress line is redrawn, at most.
const progressEvery = 500 * time.Millisecond

// progressLine is a live "\r" line on a terminal for long work a person
// watches (`rebuild --exit-when-done`, `reconcile`):
//
//	rebuild: 1234/5000 repos (24.7%), 310 repos/s, ETA 12s
//
// A nil *progressLine is off (stderr is not a terminal): every method does
// nothing, and logs stay as they are.
type progressLine struct {
	w     io.Writer
	label string
	now   func() time.Time
	every time.Duration

	mu          sync.Mutex
	start, last time.Time
	// startDone is done at start: the rate counts the work seen being done.
	startDone   int
	done, total int
	drawn       bool
}

// stderrIsTerminal reports whether stderr is a terminal.
func stderrIsTerminal() bool { return term.IsTerminal(int(os.Stderr.Fd())) }

// newProgress returns a progress line on w, or nil when tty is false.
func newProgress(w io.Writer, tty bool, label string) *progressLine {
	if !tty {
		return nil
	}
	return &progressLine{w: w, label: label, now: time.Now, every: progressEvery}
}

// Update records done of total repos (total 0: not known yet) and redraws
// the line when the last draw is at least every old.
func (p *progressLine) Update(done, total int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.start.IsZero() {
		p.start, p.startDone = now, done
	}
	p.done, p.total = done, total
	if p.drawn && now.Sub(p.last) < p.every {
		return
	}
	p.draw(now)
}

func (p *progressLine) draw(now time.Time) {
	p.last, p.drawn = now, true
	// \r returns to the line's start, ESC[K clears what a longer line left.
	elapsed, rate := now.Sub(p.start), 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(p.done-p.startDone) / s
	}
	fmt.Fprintf(p.w, "\r%s\x1b[K", formatProgress(p.label, p.done, p.total, rate, elapsed))
}

// Finish draws the final numbers and ends the line.
func (p *progressLine) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.start.IsZero() {
		return // nothing was ever reported
	}
	p.draw(p.now())
	fmt.Fprintln(p.w)
}

// formatProgress is the line's text: done of total repos (total 0: not
// known yet) at rate repos per second, elapsed since the line started.
func formatProgress(label string, done, total int, rate float64, elapsed time.Duration) string {
	if total <= 0 {
		return fmt.Sprintf("%s: %d repos, %.0f repos/s", label, done, rate)
	}
	s := fmt.Sprintf("%s: %d/%d repos (%.1f%%), %.0f repos/s", label, done, total, 100*float64(done)/float64(total), rate)
	switch {
	case done >= total:
		return s + ", done in " + elapsed.Round(time.Second).String()
	case rate > 0:
		eta := time.Duration(float64(total-done) / rate * float64(time.Second))
		return s + ", ETA " + eta.Round(time.Second).String()
	}
	return s + ", ETA unknown"
}

// watchProgress polls read every progressEvery and feeds p until ctx ends.
func watchProgress(ctx context.Context, p *progressLine, read func() (done, total int)) {
	if p == nil {
		return
	}
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if done, total := read(); done > 0 || total > 0 {
				p.Update(done, total)
			}
		}
	}
}
