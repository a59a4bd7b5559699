package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spaces-authz/spaces-authz/internal/backoff"
	"github.com/spaces-authz/spaces-authz/projector"
	"github.com/spaces-authz/spaces-authz/spice"
)

// TestStopDuringARestartIsClean: a run that ends on ErrOwnership (another
// source took a repo over) or ErrRestart is followed by a read of the
// lease; when the consumer is being stopped at that moment, the read fails
// with the canceled context, and Run must still return nil (a clean stop),
// not that error. Seen in CI: Stop during a takeover's restart returned
// "read projector: context canceled".
func TestStopDuringARestartIsClean(t *testing.T) {
	c, err := New(Config{PDSURL: "http://127.0.0.1:9", SpiceDB: spice.Config{Endpoint: "127.0.0.1:9", Insecure: true,
		Token: "t"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, why := range []error{spice.ErrOwnership, projector.ErrRestart} {
		if _, again, err := c.next(ctx, why, projector.NewPoison()); again || err != nil {
			t.Errorf("after %v with the consumer stopping: again=%v err=%v, want a clean stop", why, again, err)
		}
	}
}

// TestUnavailableSpiceDBIsWaitedOut: a run that ends on an error SpiceDB
// answers while its datastore is down (a read failing with Internal, as
// v1.56.2 does with PostgreSQL stopped) does not end the consumer: it
// waits, retrying the lease read (here against a SpiceDB that never
// answers), until SpiceDB is back or the consumer is stopped, which is then
// a clean stop.
func TestUnavailableSpiceDBIsWaitedOut(t *testing.T) {
	c, err := New(Config{PDSURL: "http://127.0.0.1:9", SpiceDB: spice.Config{Endpoint: "127.0.0.1:9", Insecure: true,
		Token: "t"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	c.retry = backoff.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	why := fmt.Errorf("projector: load lineage: %w", status.Error(codes.Internal,
		"unexpected consistency middleware error: unable to find revision: failed to connect to `user=postgres`"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	var states []State
	go func() {
		for ctx.Err() == nil {
			c.mu.Lock()
			states = append(states, c.state)
			c.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_, again, err := c.next(ctx, why, projector.NewPoison())
	if again || err != nil || time.Since(start) < 900*time.Millisecond {
		t.Fatalf("after %v: again=%v err=%v after %v, want to wait until stopped, then a clean stop", why, again, err,
			time.Since(start))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(states, StateRetrying) {
		t.Fatalf("states while waiting: %v, want %v", states, StateRetrying)
	}
}
