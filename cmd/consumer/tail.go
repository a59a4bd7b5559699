package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/internal/redact"
)

// cmdTail is the example downstream: a durable pull consumer that prints
// every change and acknowledges it. Other teams copy this loop.
func cmdTail(ctx context.Context, args []string) error {
	var n natsFlags
	var durable, subject string
	var count int
	var asJSON bool
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	n.register(fs)
	fs.StringVar(&durable, "durable", "tail", "durable consumer name: a restart resumes where it stopped")
	fs.StringVar(&subject, "subject", "", "subject filter (default <prefix>.change.>; <prefix>.> includes rejected records)")
	fs.IntVar(&count, "count", 0, "exit after this many messages (0: run until Ctrl-C)")
	fs.BoolVar(&asJSON, "json", false, "print each payload as JSON (one per line)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if n.url == "" {
		return &exitError{code: 2, err: errors.New("--nats-url (CONSUMER_NATS_URL or NATS_URL) is required")}
	}
	if err := n.validate(); err != nil {
		return err
	}
	if subject == "" {
		subject = n.prefix + ".change.>"
	}
	opts := append([]nats.Option{nats.Name("spaces-authz-tail"), nats.MaxReconnects(-1)},
		fanout.AuthOptions(os.Getenv(EnvPrefix+"NATS_USER"), os.Getenv(EnvPrefix+"NATS_PASSWORD"), n.creds, n.ca, n.cert, n.key)...)
	nc, err := nats.Connect(n.url, opts...)
	if err != nil {
		return fmt.Errorf("connect %s: %w", redact.URL(n.url), redact.Error(err))
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, n.stream, jetstream.ConsumerConfig{Durable: durable,
		FilterSubject: subject, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait: 30 * time.Second})
	if err != nil {
		return fmt.Errorf("consumer %s on stream %s: %w", durable, n.stream, err)
	}
	seen := 0
	for count == 0 || seen < count {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("fetch: %w", err)
		}
		for msg := range batch.Messages() {
			if asJSON {
				fmt.Println(strings.TrimSpace(string(msg.Data())))
			} else {
				printChange(msg)
			}
			if err := msg.Ack(); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
			seen++
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

func printChange(msg jetstream.Msg) {
	var m fanout.Message
	if err := json.Unmarshal(msg.Data(), &m); err != nil {
		fmt.Printf("%s: undecodable payload: %v\n", msg.Subject(), err)
		return
	}
	what := strings.Join(m.Relationships, " ")
	if m.Rejected != nil {
		what = "REJECTED " + m.Rejected.Reason + ": " + m.Rejected.Detail
	}
	src := fmt.Sprintf("seq %d", m.Seq)
	if m.Resync {
		src = "resync"
	}
	fmt.Printf("%s %-6s %s (%s, rev %s) %s\n", m.Kind, m.Action, m.URI, src, m.Rev, what)
}
