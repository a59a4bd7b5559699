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
	fs.Int64Var(&to, "to", -1, "replay the stream from the event after this seq (required; 0 replays all the PDS keeps)")
	fs.BoolVar(&takeover, "takeover", false, "take the lease from a running consumer (it is fenced and exits; restart it)")
	if err := parse(fs, args); err != nil {
		return err
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "to" })
	switch {
	case !given:
		return usageError(errors.New("--to SEQ is required: the seq after which the stream is replayed"))
	case to < 0:
		return usageError(fmt.Errorf("--to %d: a seq is 0 or a positive number (the event after it is replayed first)", to))
	}
	if err := c.validate(false); err != nil {
		return err
	}
	client, err := c.dial()
	if err != nil {
		return err
	}
	defer client.Close()
	// A typo in --name must not take a lease on a projector that doesn't
	// exist: `consumer run` creates a projector, a rewind only moves one.
	if err := c.checkProjector(ctx, client); err != nil {
		return err
	}
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
