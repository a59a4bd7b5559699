package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
)

// DefaultMaxConsistencyWaiters is how many /v1/consistency requests may
// wait at once unless Config says otherwise.
const DefaultMaxConsistencyWaiters = 1024

// MinAdminTokenLen is the shortest admin token accepted: long enough not
// to be guessed (`openssl rand -hex 32` makes 64 characters).
const MinAdminTokenLen = 16

// Source is what the endpoints read.
type Source interface {
	Snapshot() pipeline.Snapshot
	WaitApplied(ctx context.Context, did, rev string) (string, error)
	Resync(ctx context.Context, dids []string) error
}

// Config of the endpoints.
type Config struct {
	// Source is the consumer the endpoints report on (required).
	Source Source
	// Gatherer is the registry /metrics serves (required).
	Gatherer prometheus.Gatherer
	// AdminToken is the bearer token the admin API requires (optional;
	// at least MinAdminTokenLen bytes). Empty disables the admin API: it
	// answers 403 and says how to enable it.
	AdminToken string
	// MaxConsistencyWaiters bounds the /v1/consistency requests waiting at
	// once; past it they get 429 (optional; 0 means
	// DefaultMaxConsistencyWaiters).
	MaxConsistencyWaiters int
	// Metrics counts refusals and waiters (optional; nil counts nothing).
	Metrics *Metrics

	// ServiceDID is this consumer's service DID (optionally with a
	// #fragment), the aud an account's service-auth token must carry to
	// call ResyncAccountNSID (optional). Empty disables that method: it
	// answers 501 and says how to enable it.
	ServiceDID string
	// Directory resolves the DID documents whose keys verify service-auth
	// tokens (required when ServiceDID is set).
	Directory identity.Directory
	// AccountResyncEvery is how often, on average, one account may resync
	// itself (optional; 0 means DefaultAccountResyncEvery).
	AccountResyncEvery time.Duration
	// AccountResyncBurst is how many resyncs in a row one account may ask
	// for (optional; 0 means DefaultAccountResyncBurst).
	AccountResyncBurst int
	// MaxAccountResyncs bounds the ResyncAccountNSID requests in progress
	// at once, past it they get 429 (optional; 0 means
	// DefaultMaxAccountResyncs).
	MaxAccountResyncs int
	// Logger gets a line per refused ResyncAccountNSID request (optional;
	// nil logs nothing).
	Logger *slog.Logger
}

// Validate names the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.Source == nil:
		return errors.New("httpapi: config: Source is required")
	case c.Gatherer == nil:
		return errors.New("httpapi: config: Gatherer is required")
	case c.AdminToken != "" && len(c.AdminToken) < MinAdminTokenLen:
		return fmt.Errorf("httpapi: config: AdminToken is %d bytes, want at least %d (e.g. openssl rand -hex 32)",
			len(c.AdminToken), MinAdminTokenLen)
	case c.MaxConsistencyWaiters < 0:
		return fmt.Errorf("httpapi: config: MaxConsistencyWaiters %d is negative", c.MaxConsistencyWaiters)
	case c.AccountResyncEvery < 0:
		return fmt.Errorf("httpapi: config: AccountResyncEvery %s is negative", c.AccountResyncEvery)
	case c.AccountResyncBurst < 0:
		return fmt.Errorf("httpapi: config: AccountResyncBurst %d is negative", c.AccountResyncBurst)
	case c.MaxAccountResyncs < 0:
		return fmt.Errorf("httpapi: config: MaxAccountResyncs %d is negative", c.MaxAccountResyncs)
	case c.ServiceDID == "":
		return nil
	case c.Directory == nil:
		return errors.New("httpapi: config: Directory is required with a ServiceDID")
	}
	if err := CheckServiceDID(c.ServiceDID); err != nil {
		return fmt.Errorf("httpapi: config: ServiceDID %q: want a DID, e.g. did:web:authz.example.com: %w", c.ServiceDID, err)
	}
	return nil
}

// API holds the endpoints' handlers.
type API struct {
	src     Source
	reg     prometheus.Gatherer
	m       *Metrics
	waiters chan struct{} // a slot per waiting /v1/consistency request
	log     *slog.Logger
	// acct serves ResyncAccountNSID; nil when it is disabled.
	acct *accountResync
	// adminHash is the SHA-256 of the admin token, nil when the admin API
	// is disabled. Comparing hashes keeps the comparison constant-time
	// whatever the length of the presented token.
	adminHash []byte
}

// New checks cfg and builds the API.
func New(cfg Config) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := cfg.MaxConsistencyWaiters
	if n == 0 {
		n = DefaultMaxConsistencyWaiters
	}
	a := &API{src: cfg.Source, reg: cfg.Gatherer, m: cfg.Metrics, waiters: make(chan struct{}, n)}
	if cfg.AdminToken != "" {
		h := sha256.Sum256([]byte(cfg.AdminToken))
		a.adminHash = h[:]
	}
	if a.log = cfg.Logger; a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if cfg.ServiceDID != "" {
		a.acct = newAccountResync(&cfg)
	}
	return a, nil
}

// AccountResyncEnabled reports whether ResyncAccountNSID is served (a
// service DID is configured).
func (a *API) AccountResyncEnabled() bool { return a.acct != nil }

// AdminEnabled reports whether an admin token is configured.
func (a *API) AdminEnabled() bool { return a.adminHash != nil }

// Handler serves every endpoint, the admin API included, on one listener.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	a.public(mux)
	a.admin(mux)
	return mux
}

// PublicHandler serves every endpoint but the admin API, for a listener
// beside an AdminHandler one: /v1/admin/* answers 404 here.
func (a *API) PublicHandler() http.Handler {
	mux := http.NewServeMux()
	a.public(mux)
	mux.HandleFunc("/v1/admin/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "the admin API is served on its own address (--admin-addr)")
	})
	return mux
}

// AdminHandler serves the admin API alone.
func (a *API) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	a.admin(mux)
	return mux
}

func (a *API) public(mux *http.ServeMux) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		s := a.src.Snapshot()
		if why := s.NotReadyReason(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, StatusOf(a.src.Snapshot()))
	})
	mux.HandleFunc("GET /v1/consistency", a.consistency)
	// Authenticated by the account's own token, not the admin token: it
	// belongs on the public listener.
	mux.HandleFunc(ResyncAccountPath, a.resyncAccount)
}

// errorBody is the JSON of a refusal.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
