package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spaces-authz/spaces-authz/internal/backoff"
	"github.com/spaces-authz/spaces-authz/internal/redact"
	"github.com/spaces-authz/spaces-authz/view"
)

// Defaults for Config fields left zero.
const (
	DefaultStream          = "SPACES"
	DefaultSubjectPrefix   = "spaces.v1"
	DefaultMaxAge          = 7 * 24 * time.Hour
	DefaultDuplicateWindow = 10 * time.Minute
	DefaultMaxInFlight     = 1024
	DefaultQueueBatches    = 4
	DefaultMaxRecordBytes  = 256 << 10
)

// Config of a Publisher.
type Config struct {
	// URL of NATS (required): nats://, tls://, or a comma-separated list.
	URL string
	// User and Password (optional; from the environment on the command line).
	User, Password string
	// CredsFile is a NATS credentials file (optional).
	CredsFile string
	// CAFile verifies the server's certificate; CertFile and KeyFile are a
	// client certificate (all optional).
	CAFile, CertFile, KeyFile string
	// Stream (default SPACES) and SubjectPrefix (default spaces.v1).
	Stream, SubjectPrefix string
	// MaxAge of messages in the stream (default 7 days).
	MaxAge time.Duration
	// DuplicateWindow (default and minimum 10 minutes; at most MaxAge).
	DuplicateWindow time.Duration
	// Replicas of the stream (default 1).
	Replicas int
	// MaxInFlight unacknowledged messages (default 1024).
	MaxInFlight int
	// QueueBatches: batches waiting to be published before Publish blocks
	// (default 4).
	QueueBatches int
	// MaxRecordBytes: larger record bodies are left out of messages.
	MaxRecordBytes int
	// Source names the PDS in message IDs (required; e.g. its host).
	Source string
	// Relationship renders a relationship in a message as SpiceDB names it
	// (under the schema prefix), so that a subscriber can check it there
	// (default view.Tuple.String, unprefixed).
	Relationship func(view.Tuple) string
	// Options are extra NATS connection options (tests).
	Options []nats.Option
	Logger  *slog.Logger
	Metrics *Metrics
}

func (c *Config) defaults() error {
	if c.URL == "" {
		return errors.New("fanout: config: URL is required")
	}
	if c.Source == "" {
		return errors.New("fanout: config: Source is required")
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	if c.Relationship == nil {
		c.Relationship = view.Tuple.String
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.DuplicateWindow < DefaultDuplicateWindow {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.DuplicateWindow > c.MaxAge {
		return fmt.Errorf("fanout: config: duplicate window %v is longer than max age %v", c.DuplicateWindow, c.MaxAge)
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.QueueBatches <= 0 {
		c.QueueBatches = DefaultQueueBatches
	}
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Publisher publishes applied changes to JetStream.
type Publisher struct {
	cfg   Config
	log   *slog.Logger
	nc    *nats.Conn
	js    jetstream.JetStream
	queue chan job
}

type job struct {
	changes []view.Change
	token   string
	done    func()
}

// Connect dials NATS and creates or updates the stream.
func Connect(ctx context.Context, cfg Config) (*Publisher, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "fanout")
	opts := append([]nats.Option{nats.Name("spaces-authz-consumer"), nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second), nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected; publishing stalls until it is back", "err", err)
			}
			cfg.Metrics.setConnected(false)
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			log.Info("NATS reconnected")
			cfg.Metrics.setConnected(true)
		})}, cfg.Options...)
	opts = append(opts, AuthOptions(cfg.User, cfg.Password, cfg.CredsFile, cfg.CAFile, cfg.CertFile, cfg.KeyFile)...)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		// nats.Connect's own error may quote the URL, password included.
		return nil, fmt.Errorf("fanout: connect %s: %w", redact.URL(cfg.URL), redact.Error(err))
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxInFlight))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("fanout: jetstream: %w", err)
	}
	p := &Publisher{cfg: cfg, log: log, nc: nc, js: js, queue: make(chan job, cfg.QueueBatches)}
	if err := p.ensureStream(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	cfg.Metrics.setConnected(nc.IsConnected())
	return p, nil
}

// AuthOptions turns credentials and TLS settings into NATS options (empty
// values are left out).
func AuthOptions(user, password, credsFile, caFile, certFile, keyFile string) []nats.Option {
	var opts []nats.Option
	if user != "" {
		opts = append(opts, nats.UserInfo(user, password))
	}
	if credsFile != "" {
		opts = append(opts, nats.UserCredentials(credsFile))
	}
	if caFile != "" {
		opts = append(opts, nats.RootCAs(caFile))
	}
	if certFile != "" {
		opts = append(opts, nats.ClientCert(certFile, keyFile))
	}
	return opts
}

// ensureStream creates or updates the stream, retrying while NATS is not
// reachable yet.
func (p *Publisher) ensureStream(ctx context.Context) error {
	sc := jetstream.StreamConfig{Name: p.cfg.Stream, Subjects: []string{p.cfg.SubjectPrefix + ".>"},
		Storage: jetstream.FileStorage, MaxAge: p.cfg.MaxAge, Duplicates: p.cfg.DuplicateWindow, Replicas: p.cfg.Replicas,
		Description: "spaces-authz: changes applied to the authorization view"}
	bo := backoff.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := p.js.CreateOrUpdateStream(cctx, sc)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || bo.Attempts() >= 20 {
			return fmt.Errorf("fanout: create stream %s: %w", p.cfg.Stream, err)
		}
		p.log.Warn("creating the JetStream stream failed; retrying", "stream", p.cfg.Stream, "err", err)
		if err := bo.Wait(ctx); err != nil {
			return err
		}
	}
}

// Close drains and closes the connection.
func (p *Publisher) Close() {
	_ = p.nc.Drain()
}

// Connected reports whether NATS is connected.
func (p *Publisher) Connected() bool { return p.nc.IsConnected() }

// Publish queues a committed batch's changes; done is called once JetStream
// acknowledged every message. It blocks while QueueBatches batches wait
// (NATS down or slow): the projector then stops taking events.
func (p *Publisher) Publish(ctx context.Context, changes []view.Change, token string, done func()) error {
	select {
	case p.queue <- job{changes: changes, token: token, done: done}:
		return nil
	case <-ctx.Done():
		return nil // shutdown: the batch's events are not done and replay
	}
}

// Run publishes queued batches in order until ctx ends.
func (p *Publisher) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-p.queue:
			var msgs []outMsg
			for _, c := range j.changes {
				ms, err := build(c, j.token, p.cfg.Source, p.cfg.SubjectPrefix, p.cfg.MaxRecordBytes, p.cfg.Relationship)
				if err != nil {
					return err
				}
				msgs = append(msgs, ms...)
			}
			if err := p.publishAll(ctx, msgs); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			j.done()
		}
	}
}

// publishAll publishes msgs asynchronously (bounded by MaxInFlight) and
// waits for every ack. On a failure it backs off and publishes again from
// the first message not acknowledged: those already stored are dropped as
// duplicates by their Msg-Id.
func (p *Publisher) publishAll(ctx context.Context, msgs []outMsg) error {
	window := max(p.cfg.MaxInFlight/2, 1)
	for start := 0; start < len(msgs); start += window {
		if err := p.publishWindow(ctx, msgs[start:min(start+window, len(msgs))]); err != nil {
			return err
		}
	}
	return nil
}

// publishWindow publishes at most MaxInFlight/2 messages and waits for
// their acks, retrying from the first failure.
func (p *Publisher) publishWindow(ctx context.Context, msgs []outMsg) error {
	bo := backoff.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for start := 0; start < len(msgs); {
		futures := make([]jetstream.PubAckFuture, 0, len(msgs)-start)
		var pubErr error
		for _, m := range msgs[start:] {
			f, err := p.js.PublishAsync(m.subject, m.data, jetstream.WithMsgID(m.id))
			if err != nil {
				pubErr = err
				break
			}
			futures = append(futures, f)
		}
		failed := -1
		for i, f := range futures {
			select {
			case ack := <-f.Ok():
				if ack.Duplicate {
					p.cfg.Metrics.publish("duplicate")
				} else {
					p.cfg.Metrics.publish("ok")
				}
			case err := <-f.Err():
				if failed < 0 {
					failed = i
					pubErr = err
				}
				p.cfg.Metrics.publish("error")
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if pubErr == nil && failed < 0 {
			return nil
		}
		if failed < 0 {
			failed = len(futures) // PublishAsync refused msgs[start+len(futures)]
		}
		start += failed
		d := bo.Next()
		p.log.Warn("publishing to JetStream failed; retrying from the first unacknowledged message", "err", pubErr,
			"remaining", len(msgs)-start, "delay", d)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return nil
}

// Stream is the JetStream stream's name.
func (p *Publisher) Stream() string { return p.cfg.Stream }
