package pipeline

import (
	"context"
	"io"
	"log/slog"
	"testing"

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
