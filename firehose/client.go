package firehose

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/internal/backoff"
	"github.com/spaces-authz/spaces-authz/internal/crashpoint"
	"github.com/spaces-authz/spaces-authz/view"
)

// Handler receives the stream. HandleEvent is called for the events of one
// DID in stream order, never concurrently for the same DID; it must call
// Tracker.Done(ev.Seq) once the event is fully applied (possibly later, from
// another goroutine). An error from either method is fatal and ends Run.
type Handler interface {
	HandleEvent(ctx context.Context, ev *Event) error
	HandleInfo(ctx context.Context, info Info) error
}

// Defaults for Config fields left zero.
const (
	DefaultWorkers       = 4
	DefaultQueueDepth    = 64
	DefaultMaxFrameBytes = 8 << 20
	DefaultPingInterval  = 20 * time.Second
	DefaultReadTimeout   = 60 * time.Second
	// discardFactor bounds how much of an oversized frame is read and
	// thrown away before the connection is dropped instead.
	discardFactor = 16
	// stableSession is how long a connection must live before the
	// reconnect backoff starts again from its minimum.
	stableSession = 30 * time.Second
)

// Config of a Client.
type Config struct {
	// URL of the PDS (required): http(s):// or ws(s)://, with or without
	// the /xrpc/com.atproto.sync.subscribeRepos path.
	URL string
	// Tracker (required) holds the position to resume from and admits events.
	Tracker *checkpoint.Tracker
	// Handler (required) receives events and #info messages.
	Handler Handler
	// Filter selects the ops whose records are read. Nil reads every op.
	Filter Filter
	// Workers is the number of per-DID delivery lanes (default 4).
	Workers int
	// QueueDepth is the capacity of each lane (default 64).
	QueueDepth int
	// MaxFrameBytes: larger frames are counted, skipped and the stream goes
	// on (default 8 MiB).
	MaxFrameBytes int
	// PingInterval between websocket pings (default 20s).
	PingInterval time.Duration
	// ReadTimeout: a connection with no frame and no pong for this long is
	// dropped and reopened (default 60s).
	ReadTimeout time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay (defaults 250ms, 30s).
	BackoffMin, BackoffMax time.Duration
	// Logger (optional; default slog.Default()).
	Logger *slog.Logger
	// Metrics (optional).
	Metrics *Metrics
	// Source (optional) keeps the source's head and link state, and the
	// lag, across the Clients of successive runs; default a new one with no
	// gauges.
	Source *Source
	// Dialer (optional; default a websocket.Dialer with a 10s handshake
	// timeout).
	Dialer *websocket.Dialer
	// OnFrame, when set, sees every binary frame exactly as received, on the
	// reader goroutine, before it is decoded (captures).
	OnFrame func(frame []byte)
	// Verifier (optional) checks each #commit that has an op passing the
	// Filter, in the delivery workers, before the Handler sees it; a
	// refused commit is delivered with Event.Unverified set. Nil verifies
	// nothing (a stream read straight from the PDS that signs it).
	Verifier CommitVerifier
	// VerifyAlso (optional, with Verifier) says whose commits to verify
	// even when no op passed the Filter (the repos whose rev chain the
	// handler follows). Other commits with no such op are delivered with
	// Event.Unchecked set.
	VerifyAlso func(did string) bool
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if c.URL == "" {
		return errors.New("firehose: config: URL is required")
	}
	if _, err := StreamURL(c.URL, checkpoint.None); err != nil {
		return err
	}
	if c.Tracker == nil {
		return errors.New("firehose: config: Tracker is required")
	}
	if c.Handler == nil {
		return errors.New("firehose: config: Handler is required")
	}
	return nil
}

// Client reads the stream of one PDS.
type Client struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	connected bool
	lastErr   error
	headTime  time.Time
	lastRead  time.Time
	ready     chan struct{}
	readyOnce sync.Once
}

// LastRead is when the newest event was read (zero before any).
func (c *Client) LastRead() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastRead
}

// Ready is closed once the first stream connection is up.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// HeadTime is the `time` of the newest event read.
func (c *Client) HeadTime() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.headTime, !c.headTime.IsZero()
}

// New checks cfg and fills its defaults.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = DefaultQueueDepth
	}
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.Dialer == nil {
		// A large read buffer lets one read syscall bring in many frames
		// (gorilla's default of 4 KiB costs about one syscall per frame).
		cfg.Dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment,
			ReadBufferSize: 256 << 10}
	}
	if cfg.Source == nil {
		cfg.Source = NewSource(nil)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Client{cfg: cfg, log: log.With("component", "firehose"), ready: make(chan struct{})}, nil
}

// Connected reports whether the stream connection is up, and the error that
// ended the last one.
func (c *Client) Connected() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected, c.lastErr
}

func (c *Client) setConnected(up bool, err error) {
	c.mu.Lock()
	c.connected = up
	if err != nil {
		c.lastErr = err
	}
	c.mu.Unlock()
	c.cfg.Source.link(up, time.Now())
	c.cfg.Metrics.setConnected(up)
}

// hostURL parses a PDS URL given as http(s) or ws(s), and returns it with
// the websocket scheme (ws) or the HTTP one.
func hostURL(raw string, ws bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("firehose: parse URL %q: %w", raw, err)
	}
	secure := false
	switch u.Scheme {
	case "http", "ws":
	case "https", "wss":
		secure = true
	default:
		return nil, fmt.Errorf("firehose: URL %q: scheme must be http, https, ws or wss", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("firehose: URL %q has no host", raw)
	}
	u.Scheme = "http"
	if ws {
		u.Scheme = "ws"
	}
	if secure {
		u.Scheme += "s"
	}
	return u, nil
}

// StreamURL builds the subscribeRepos URL for base and an exclusive cursor
// (checkpoint.None for live only).
func StreamURL(base string, cursor int64) (string, error) {
	u, err := hostURL(base, true)
	if err != nil {
		return "", err
	}
	const path = "/xrpc/com.atproto.sync.subscribeRepos"
	if !strings.HasSuffix(u.Path, path) {
		u.Path = strings.TrimSuffix(u.Path, "/") + path
	}
	q := u.Query()
	q.Del("cursor")
	if cursor >= 0 {
		q.Set("cursor", strconv.FormatInt(cursor, 10))
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// Run reads the stream until ctx is cancelled (returning nil) or a fatal
// error: FutureCursor (wrapping ErrFutureCursor) or a Handler error. It
// reconnects forever otherwise, resuming from the Tracker's watermark.
func (c *Client) Run(ctx context.Context) error {
	c.cfg.Source.attach(c.cfg.Tracker)
	g, ctx := errgroup.WithContext(ctx)
	lanes := make([]chan *Frame, c.cfg.Workers)
	for i := range lanes {
		lane := make(chan *Frame, c.cfg.QueueDepth)
		lanes[i] = lane
		g.Go(func() error { return c.deliver(ctx, lane) })
	}
	g.Go(func() error {
		defer func() {
			for _, l := range lanes {
				close(l)
			}
		}()
		return c.readLoop(ctx, lanes)
	})
	err := g.Wait()
	if ctx.Err() != nil && !errors.Is(err, ErrFutureCursor) && !isHandlerErr(err) {
		return nil
	}
	return err
}

type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

func isHandlerErr(err error) bool {
	var h *handlerError
	return errors.As(err, &h) && !errors.Is(err, context.Canceled)
}

// deliver decodes records and hands events of one lane to the Handler.
func (c *Client) deliver(ctx context.Context, lane <-chan *Frame) error {
	for f := range lane {
		if ctx.Err() != nil {
			return nil
		}
		for _, d := range f.droppedOps() {
			c.cfg.Metrics.badOp(d.Reason)
			c.log.Warn("op unreadable, dropped", "reason", d.Reason, "did", f.Event.DID, "seq", f.Event.Seq,
				"detail", view.Clip(d.Detail), "malformed", f.Event.Malformed != "")
		}
		if f.Event.Kind == KindIdentity {
			c.purgeKey(ctx, f.Event)
		}
		if f.raw != nil {
			c.verify(ctx, f)
			if ctx.Err() != nil {
				return nil
			}
		}
		f.DecodeRecords()
		for i := range f.Event.Ops {
			if e := f.Event.Ops[i].Err; e != nil {
				c.cfg.Metrics.badOp(e.Reason)
				c.log.Warn("record unreadable", "reason", e.Reason, "did", f.Event.DID, "seq", f.Event.Seq,
					"path", view.Clip(f.Event.Ops[i].Path()), "detail", view.Clip(e.Detail))
			}
		}
		if err := c.cfg.Handler.HandleEvent(ctx, f.Event); err != nil {
			return &handlerError{fmt.Errorf("firehose: handle event %d: %w", f.Event.Seq, err)}
		}
	}
	return nil
}

// KeyPurger is implemented by a CommitVerifier that caches signing keys
// (*Verifier does): the client calls PurgeKey for each #identity event,
// in the DID's lane, so the DID's next commit is checked against a fresh
// key.
type KeyPurger interface {
	PurgeKey(ctx context.Context, did string) error
}

// purgeKey drops the Verifier's cached key of an #identity event's DID.
func (c *Client) purgeKey(ctx context.Context, ev *Event) {
	p, ok := c.cfg.Verifier.(KeyPurger)
	if !ok {
		return
	}
	if err := p.PurgeKey(ctx, ev.DID); err != nil {
		c.log.Warn("could not drop a cached signing key after an #identity event", "did", ev.DID, "seq", ev.Seq,
			"err", view.Clip(err.Error()))
	}
}

// verify runs the Verifier on a frame's commit and marks the event when it
// is refused.
func (c *Client) verify(ctx context.Context, f *Frame) {
	ev := f.Event
	err := c.cfg.Verifier.VerifyCommit(ctx, ev, f.raw)
	f.raw = nil
	if err == nil {
		c.cfg.Metrics.verified()
		return
	}
	if ctx.Err() != nil {
		return
	}
	ev.Unverified = unverifiedReason(err)
	c.cfg.Metrics.unverified(ev.Unverified)
	c.log.Warn("commit not verified; it will not be applied", "did", ev.DID, "seq", ev.Seq, "rev", ev.Rev,
		"reason", ev.Unverified, "err", view.Clip(err.Error()))
}

func (c *Client) readLoop(ctx context.Context, lanes []chan *Frame) error {
	bo := backoff.Backoff{Min: c.cfg.BackoffMin, Max: c.cfg.BackoffMax}
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return nil
		}
		if attempt > 0 {
			c.cfg.Metrics.reconnect()
		}
		start := time.Now()
		n, err := c.session(ctx, lanes)
		c.setConnected(false, err)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrFutureCursor) || isHandlerErr(err) {
			return err
		}
		if n > 0 || time.Since(start) > stableSession {
			bo.Reset()
		}
		delay := bo.Next()
		c.log.Warn("stream connection ended; reconnecting", "err", err, "events", n,
			"resume_cursor", c.cfg.Tracker.Watermark(), "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session runs one connection. It returns the number of events dispatched
// and why the connection ended.
func (c *Client) session(ctx context.Context, lanes []chan *Frame) (int, error) {
	cursor := c.cfg.Tracker.Watermark()
	conn, err := c.dial(ctx, cursor)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := c.announce(ctx, cursor); err != nil {
		return 0, err
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.keepAlive(sctx, conn)
	}()
	return c.readEvents(ctx, conn, lanes, cursor)
}

// dial opens the stream from the exclusive cursor (None: live).
func (c *Client) dial(ctx context.Context, cursor int64) (*websocket.Conn, error) {
	u, err := StreamURL(c.cfg.URL, cursor)
	if err != nil {
		return nil, err
	}
	conn, resp, err := c.cfg.Dialer.DialContext(ctx, u, nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("firehose: dial %s: %w (HTTP %d)", redact(u), err, resp.StatusCode)
		}
		return nil, fmt.Errorf("firehose: dial %s: %w", redact(u), err)
	}
	c.setConnected(true, nil)
	c.log.Info("stream connected", "url", redact(u), "cursor", cursor)
	crashpoint.Hit(crashpoint.Reconnect)
	return conn, nil
}

// announce marks the first connection ready, and tells the handler when a
// later one had no cursor to resume from: events between the connections
// may be missing.
func (c *Client) announce(ctx context.Context, cursor int64) error {
	first := false
	c.readyOnce.Do(func() {
		first = true
		close(c.ready)
	})
	if first || cursor != checkpoint.None {
		return nil
	}
	c.log.Warn("reconnected live without a cursor: events between the connections may be missing")
	if err := c.cfg.Handler.HandleInfo(ctx, Info{Name: InfoLiveGap, Message: "reconnected without a cursor"}); err != nil {
		return &handlerError{fmt.Errorf("firehose: handle live gap: %w", err)}
	}
	return nil
}

// readEvents reads frames until the connection ends, and hands each new
// event to its DID's lane.
func (c *Client) readEvents(ctx context.Context, conn *websocket.Conn, lanes []chan *Frame, cursor int64) (int, error) {
	// The read deadline moves at most every slack (a tenth of the timeout,
	// at most a second): setting it per frame costs more than decoding a
	// frame nobody projects.
	slack := min(time.Second, c.cfg.ReadTimeout/10)
	var extended time.Time
	extend := func(now time.Time) {
		if now.Sub(extended) >= slack {
			_ = conn.SetReadDeadline(now.Add(c.cfg.ReadTimeout))
			extended = now
		}
	}
	extend(time.Now())
	conn.SetPongHandler(func(string) error { extend(time.Now()); return nil })

	n := 0
	delivered := c.cfg.Tracker.Highest()
	buf := make([]byte, 0, 64<<10)
	for {
		mt, r, err := conn.NextReader()
		if err != nil {
			if ctx.Err() != nil {
				return n, nil
			}
			return n, fmt.Errorf("firehose: read: %w", err)
		}
		now := time.Now()
		extend(now)
		frame, over, err := readFrame(r, buf[:0], c.cfg.MaxFrameBytes)
		if err != nil {
			return n, fmt.Errorf("firehose: read frame: %w", err)
		}
		c.cfg.Metrics.read(len(frame))
		if cap(frame) > cap(buf) && cap(frame) <= 1<<20 {
			buf = frame[:0]
		}
		f, err := c.decode(mt, frame, over)
		if f == nil {
			if err != nil {
				return n, err
			}
			continue
		}
		if err := c.control(ctx, f, cursor); err != nil || f.Event == nil {
			if err != nil {
				return n, err
			}
			continue
		}
		ev := f.Event
		c.cfg.Metrics.head(c.cfg.Source.saw(ev.Seq, now))
		if ev.Seq <= delivered {
			// A replay after reconnecting from the watermark: this event
			// is already in flight or done in this process.
			c.cfg.Metrics.duplicate()
			continue
		}
		// The frame buffer is reused; DecodeFrame copies everything it
		// keeps (cbor-gen allocates byte strings), so f holds no reference.
		ts, ok := parseTime(ev.Time)
		at := ts
		if !ok || at.After(now) {
			// The lag of an event without a time counts from its reading;
			// so does one dated after it (a PDS clock ahead, or a bogus
			// time), which would otherwise hide a stall until that date.
			at = now
		}
		if err := c.cfg.Tracker.BeginEvent(ctx, ev.Seq, int64(len(frame)), at); err != nil {
			if ctx.Err() != nil {
				return n, nil
			}
			return n, err
		}
		delivered = ev.Seq
		c.observe(ev, ts, ok, now)
		select {
		case lanes[lane(ev.DID, len(lanes))] <- f:
		case <-ctx.Done():
			return n, nil
		}
		n++
	}
}

// decode turns one websocket message into a frame. Unusable messages
// (oversized, text, undecodable) are counted, logged and skipped: nil, nil.
func (c *Client) decode(mt int, frame []byte, over int) (*Frame, error) {
	if over > 0 {
		c.cfg.Metrics.badFrame(ReasonOversized)
		c.log.Warn("oversized frame skipped", "bytes", over, "limit", c.cfg.MaxFrameBytes)
		return nil, nil
	}
	if mt != websocket.BinaryMessage {
		c.cfg.Metrics.badFrame(ReasonTextFrame)
		c.log.Warn("non-binary frame skipped", "type", mt, "bytes", len(frame))
		return nil, nil
	}
	if c.cfg.OnFrame != nil {
		c.cfg.OnFrame(frame)
	}
	f, err := DecodeFrame(frame, c.cfg.Filter)
	if err == nil && c.cfg.Verifier != nil && f.Event != nil && f.Event.Kind == KindCommit {
		// A Malformed commit is not verified (its repo is resynced), one
		// with no op kept carries nothing projected and is verified only
		// for the repos VerifyAlso names (the cost stays on the few
		// frames that matter); the others are marked Unchecked: neither
		// their ops nor their revs are the account's word.
		if f.Event.Malformed == "" && (len(f.Event.Ops) > 0 || (c.cfg.VerifyAlso != nil && c.cfg.VerifyAlso(f.Event.DID))) {
			f.raw = cloneBytes(frame)
		} else {
			f.Event.Unchecked = true
		}
	}
	if err != nil {
		var bf *BadFrameError
		reason := ReasonMalformedFrame
		if errors.As(err, &bf) {
			reason = bf.Reason
		}
		c.cfg.Metrics.badFrame(reason)
		c.log.Warn("bad frame skipped", "reason", reason, "err", view.Clip(err.Error()), "bytes", len(frame))
		return nil, nil
	}
	return f, nil
}

// control handles error and #info frames: an error frame ends the
// connection (FutureCursor fatally), an #info goes to the handler.
func (c *Client) control(ctx context.Context, f *Frame, cursor int64) error {
	switch {
	case f.Err != nil:
		c.cfg.Metrics.errorFrame(f.Err.Name)
		if f.Err.Name == "FutureCursor" {
			return fmt.Errorf("firehose: cursor %d: %w (PDS said: %s)", cursor, ErrFutureCursor, view.Clip(f.Err.Message))
		}
		return f.Err
	case f.Info != nil:
		c.cfg.Metrics.info(f.Info.Name)
		c.log.Warn("stream info message", "name", view.Clip(f.Info.Name), "message", view.Clip(f.Info.Message), "cursor", cursor)
		if err := c.cfg.Handler.HandleInfo(ctx, *f.Info); err != nil {
			return &handlerError{fmt.Errorf("firehose: handle info %s: %w", view.Clip(f.Info.Name), err)}
		}
	}
	return nil
}

// observe records an event read (with its time ts when hasTime): metrics,
// the head time, the last read.
func (c *Client) observe(ev *Event, ts time.Time, hasTime bool, now time.Time) {
	if !hasTime {
		ts = time.Time{}
	}
	c.cfg.Metrics.event(ev, ts)
	c.mu.Lock()
	c.lastRead = now
	if !ts.IsZero() {
		c.headTime = ts
	}
	c.mu.Unlock()
}

// readFrame reads one message into buf, up to limit bytes. A longer message
// is read to its end and thrown away (up to discardFactor×limit, beyond
// which the connection is given up) and its size returned as over.
func readFrame(r io.Reader, buf []byte, limit int) (frame []byte, over int, err error) {
	lr := io.LimitReader(r, int64(limit)+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, err
		}
	}
	if len(buf) <= limit {
		return buf, 0, nil
	}
	n, err := io.Copy(io.Discard, io.LimitReader(r, int64(limit)*discardFactor))
	if err != nil {
		return nil, 0, err
	}
	if n >= int64(limit)*discardFactor {
		return nil, 0, fmt.Errorf("frame larger than %d bytes", int64(limit)*(discardFactor+1))
	}
	return nil, len(buf) + int(n), nil
}

func (c *Client) keepAlive(ctx context.Context, conn *websocket.Conn) {
	t := time.NewTicker(c.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Unblocks the reader, which may wait in NextReader until its
			// read deadline otherwise.
			_ = conn.Close()
			return
		case <-t.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(10*time.Second)); err != nil {
				c.log.Debug("ping failed", "err", err)
			}
		}
	}
}

// lane routes a DID to its delivery lane; one DID always maps to one lane,
// which is what keeps its events in order.
func lane(did string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(did))
	return int(h.Sum32() % uint32(n))
}

// redact drops credentials from a URL before it is logged.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	u.User = nil
	return u.String()
}
