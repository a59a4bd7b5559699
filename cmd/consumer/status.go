package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/redact"
)

// statusReport is what `consumer status` prints.
type statusReport struct {
	Projector       string          `json:"projector"`
	Cursor          int64           `json:"cursor"`
	LeaseHolder     string          `json:"lease_holder,omitempty"`
	HeartbeatAgeSec float64         `json:"heartbeat_age_seconds,omitempty"`
	RewindMarker    int64           `json:"rewind_marker,omitempty"`
	PDSHead         int64           `json:"pds_head_seq"`
	PDSHeadExact    bool            `json:"pds_head_exact"`
	PDSError        string          `json:"pds_error,omitempty"`
	LagEvents       int64           `json:"lag_events"`
	Daemon          *httpapi.Status `json:"daemon,omitempty"`
	DaemonError     string          `json:"daemon_error,omitempty"`
}

func cmdStatus(ctx context.Context, args []string) error {
	var c common
	var asJSON bool
	var httpAddr string
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	c.register(fs, "text")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:9464",
		"the running daemon's HTTP address (for lag, errors, counts); \"\": don't ask the daemon")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := c.validate(false); err != nil {
		return err
	}
	if httpAddr != "" && !strings.Contains(httpAddr, "://") {
		if err := checkAddr("http-addr", httpAddr); err != nil {
			return err
		}
	}
	client, err := c.dial()
	if err != nil {
		return err
	}
	defer client.Close()
	if err := c.checkProjector(ctx, client); err != nil {
		return err
	}
	lease, err := client.ReadProjector(ctx, c.name)
	if err != nil {
		return err
	}
	st := lease.Progress
	rep := statusReport{Projector: c.name, Cursor: st.Cursor, LeaseHolder: lease.Holder, PDSHead: -1}
	if lease.HeartbeatMs > 0 {
		rep.HeartbeatAgeSec = time.Since(time.UnixMilli(lease.HeartbeatMs)).Seconds()
	}
	if st.Rewind != checkpoint.None {
		rep.RewindMarker = st.Rewind
	}
	// What status reports on but can't reach makes it exit 1, after the
	// report: a script must not read "lag 0" from a PDS it never reached.
	var unreachable []string
	if c.streamURL() != "" {
		var err error
		rep.PDSHead, rep.PDSHeadExact, err = probeHead(ctx, c.streamURL(), st.Cursor)
		if err != nil {
			rep.PDSError = redact.String(err.Error())
			unreachable = append(unreachable, fmt.Sprintf("the PDS at %s (%s)", redact.URL(c.streamURL()), rep.PDSError))
		}
		if rep.PDSHead >= 0 && st.Cursor >= 0 {
			rep.LagEvents = max(0, rep.PDSHead-st.Cursor)
		}
	}
	if httpAddr != "" {
		if d, err := daemonStatus(ctx, httpAddr); err == nil {
			rep.Daemon = d
		} else {
			rep.DaemonError = redact.String(err.Error())
			unreachable = append(unreachable, fmt.Sprintf("the daemon at %s (%s)", redact.URL(httpAddr), rep.DaemonError))
		}
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printStatus(os.Stdout, rep, httpAddr != "")
	}
	if len(unreachable) > 0 {
		return fmt.Errorf("not reachable: %s", strings.Join(unreachable, "; "))
	}
	return nil
}

func printStatus(w io.Writer, r statusReport, askedDaemon bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "projector\t%s\n", r.Projector)
	cur := "none (first run: the consumer will rebuild)"
	if r.Cursor >= 0 {
		cur = fmt.Sprint(r.Cursor)
	}
	fmt.Fprintf(tw, "cursor\t%s\n", cur)
	switch {
	case r.PDSError != "":
		fmt.Fprintf(tw, "PDS head\tunknown: the PDS is not reachable (%s)\n", r.PDSError)
	case r.PDSHead < 0:
		fmt.Fprintf(tw, "PDS head\tunknown (pass --pds-url)\n")
	case r.PDSHeadExact:
		fmt.Fprintf(tw, "PDS head\t%d\n", r.PDSHead)
	default:
		fmt.Fprintf(tw, "PDS head\tat least %d (still replaying after 2s)\n", r.PDSHead)
	}
	if r.PDSHead >= 0 && r.Cursor >= 0 && r.PDSError == "" {
		fmt.Fprintf(tw, "lag\t%d events\n", r.LagEvents)
	}
	lease := "free"
	if r.LeaseHolder != "" {
		lease = fmt.Sprintf("held by %s (heartbeat %.1fs ago)", r.LeaseHolder, r.HeartbeatAgeSec)
	}
	fmt.Fprintf(tw, "lease\t%s\n", lease)
	if r.RewindMarker > 0 {
		fmt.Fprintf(tw, "rewind\trepos resync on their first event up to seq %d\n", r.RewindMarker)
	}
	if d := r.Daemon; d != nil {
		fmt.Fprintf(tw, "daemon\t%s, ready=%v, connected=%v, fenced=%v, up %s\n", d.State, d.Ready, d.Connected, d.Fenced,
			(time.Duration(d.UptimeSeconds) * time.Second).String())
		fmt.Fprintf(tw, "applied\twatermark %d, PDS head %d (last seen), %d in flight, lag %d events, %.1fs\n",
			d.Watermark, d.HeadSeq, d.InFlight, d.LagEvents, d.LagSeconds)
		fmt.Fprintf(tw, "counts\t%d events written in %d batches, %d repos cached, %d refused tuples, %d restarts\n",
			d.EventsWritten, d.Batches, d.CachedRepos, d.RefusedTuples, d.PipelineRestarts)
		if d.Desynchronized > 0 {
			fmt.Fprintf(tw, "desynchronized\t%d repos could not be read and are retried with backoff (%s)\n",
				d.Desynchronized, strings.Join(d.DesyncDIDs, ", "))
		}
		if d.LastError != "" {
			fmt.Fprintf(tw, "last error\t%s\n", redact.String(d.LastError))
		}
	} else if askedDaemon {
		fmt.Fprintf(tw, "daemon\tnot reachable (%s)\n", r.DaemonError)
	}
	_ = tw.Flush()
}

func daemonStatus(ctx context.Context, addr string) (*httpapi.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/v1/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var s httpapi.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

// probeHead finds the PDS's newest seq by replaying from the cursor (or
// from the start) until the stream goes quiet, for at most 2 seconds. The
// error says why the stream could not be opened.
func probeHead(ctx context.Context, pdsURL string, cursor int64) (int64, bool, error) {
	if cursor < 0 {
		cursor = 0
	}
	u, err := firehose.StreamURL(pdsURL, cursor)
	if err != nil {
		return -1, false, err
	}
	d := websocket.Dialer{HandshakeTimeout: 3 * time.Second}
	conn, resp, err := d.DialContext(ctx, u, nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return -1, false, redact.Error(err)
	}
	defer conn.Close()
	head := cursor
	deadline := time.Now().Add(2 * time.Second)
	for {
		next := time.Now().Add(300 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		_ = conn.SetReadDeadline(next)
		_, b, err := conn.ReadMessage()
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				return head, time.Now().Before(deadline), nil
			}
			return head, false, nil
		}
		f, err := firehose.DecodeFrame(b, func(string) bool { return false })
		if err == nil && f.Event != nil && f.Event.Seq > head {
			head = f.Event.Seq
		}
		if err == nil && f.Err != nil {
			return head, false, nil
		}
	}
}
