package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/spice"
)

func cmdRewind(ctx context.Context, args []string) error {
	var c common
	var to int64
	var takeover bool
	fs := flag.NewFlagSet("rewind", flag.ContinueOnError)
	c.register(fs, "text")
	fs.Int64Var(&to, "to", -1, "replay the stream from the event after this seq (required)")
	fs.BoolVar(&takeover, "takeover", false, "take the lease from a running consumer (it is fenced and exits; restart it)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if to < 0 {
		return &exitError{code: 2, err: errors.New("--to SEQ is required")}
	}
	client, err := c.dial()
	if err != nil {
		return err
	}
	defer client.Close()
	lease := spice.LeaseConfig{Client: client, Name: c.name, Holder: pipeline.NewHolderID(), Takeover: takeover}
	before, err := spice.MoveProgress(ctx, lease, func(st checkpoint.State) (checkpoint.Step, error) {
		return checkpoint.Rewind(c.name, st, to)
	})
	if errors.Is(err, spice.ErrLeaseHeld) {
		return fmt.Errorf("%w: a consumer is running; stop it first, or pass --takeover (it is fenced and exits)", err)
	}
	if err != nil {
		return err
	}
	fmt.Printf("cursor moved from %d to %d; repos are resynced on their first event up to seq %d\n",
		before.Cursor, to, max(before.Cursor, before.Rewind))
	fmt.Println("start (or restart) `consumer run`: it replays from there and re-publishes to NATS (de-duplicated inside the window)")
	return nil
}
