package httpapi

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
)

// TestListenBoundsConnections: idle keep-alive connections close, and
// WriteTimeout outlasts the longest /v1/consistency wait.
func TestListenBoundsConnections(t *testing.T) {
	t.Parallel()
	s, err := Listen("127.0.0.1:0", http.NotFoundHandler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.ln.Close()
	if s.srv.IdleTimeout <= 0 {
		t.Error("IdleTimeout is not set: idle keep-alive connections never close")
	}
	if s.srv.ReadHeaderTimeout <= 0 || s.srv.ReadTimeout <= 0 {
		t.Error("read timeouts are not set")
	}
	if s.srv.WriteTimeout <= MaxConsistencyTimeout {
		t.Errorf("WriteTimeout %v does not outlast MaxConsistencyTimeout %v", s.srv.WriteTimeout, MaxConsistencyTimeout)
	}
}

// slowResync resyncs in longer than the server's WriteTimeout.
type slowResync struct{ d time.Duration }

func (slowResync) Snapshot() pipeline.Snapshot { return pipeline.Snapshot{} }
func (slowResync) WaitApplied(_ context.Context, _, _ string) (string, error) {
	return "", nil
}
func (s slowResync) Resync(ctx context.Context, _ []string) error {
	select {
	case <-time.After(s.d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestResyncOutlastsWriteTimeout: a resync takes longer than the
// WriteTimeout sized for /v1/consistency; its answer still arrives.
func TestResyncOutlastsWriteTimeout(t *testing.T) {
	t.Parallel()
	a, err := New(Config{Source: slowResync{d: 600 * time.Millisecond}, Gatherer: prometheus.NewRegistry(),
		AdminToken: "0123456789abcdef0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Listen("127.0.0.1:0", a.Handler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.srv.WriteTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+s.Addr()+"/v1/admin/resync?did=did:plc:alice", nil)
	req.Header.Set("Authorization", "Bearer 0123456789abcdef0123456789abcdef")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the resync's answer was cut off: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}
