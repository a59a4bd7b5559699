package backoff

import (
	"context"
	"testing"
	"time"
)

func TestNextIsCappedAndJittered(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	want := []time.Duration{10, 20, 40, 80, 80, 80}
	for i, w := range want {
		w *= time.Millisecond
		d := b.Next()
		if d < w/2 || d > w {
			t.Fatalf("attempt %d: delay %v outside [%v, %v]", i, d, w/2, w)
		}
	}
	if b.Attempts() != len(want) {
		t.Fatalf("attempts = %d", b.Attempts())
	}
	b.Reset()
	if d := b.Next(); d > 10*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	b := Backoff{Min: time.Hour, Max: time.Hour}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.Wait(ctx); err == nil {
		t.Fatal("Wait returned nil on a cancelled context")
	}
}
