package spice

import (
	"context"
	"fmt"

	"github.com/spaces-authz/spaces-authz/checkpoint"
)

// MoveProgress is a tool's write of a source's progress (`consumer
// rewind`): it takes the lease (waiting for none: a running daemon makes it
// fail with ErrLeaseHeld, unless cfg.Takeover fences it), asks plan for the
// step from the stored state, commits it in one call, and gives the lease
// back. It returns the state it started from.
func MoveProgress(ctx context.Context, cfg LeaseConfig, plan func(checkpoint.State) (checkpoint.Step, error)) (checkpoint.State, error) {
	st, err := AcquireLease(ctx, cfg)
	if err != nil {
		return st.Progress, fmt.Errorf("spice: move progress: %w", err)
	}
	w := NewWriter(WriterConfig{Client: cfg.Client, Name: cfg.Name, Holder: cfg.Holder, HeartbeatMs: st.HeartbeatMs,
		Epoch:  checkpoint.None,
		Logger: cfg.Logger, Metrics: cfg.Metrics})
	defer func() { _ = w.Release(context.WithoutCancel(ctx)) }()
	step, err := plan(st.Progress)
	if err != nil {
		return st.Progress, err
	}
	if _, err := w.Write(ctx, nil, step.Updates(), nil); err != nil {
		return st.Progress, fmt.Errorf("spice: move progress: %w", err)
	}
	return st.Progress, nil
}
