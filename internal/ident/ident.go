package ident

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/bluesky-social/indigo/util/ssrf"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	DefaultPLCURL   = "https://plc.directory"
	DefaultCapacity = 100_000
	DefaultHitTTL   = 24 * time.Hour
	DefaultErrTTL   = 2 * time.Minute
	// DefaultHTTPTimeout bounds one DID document fetch when Config.HTTP is nil.
	DefaultHTTPTimeout = 10 * time.Second
)

// Errors of resolution, re-exported from indigo for errors.Is.
var (
	// ErrDIDNotFound: the PLC directory or the did:web host says the DID
	// does not exist.
	ErrDIDNotFound = identity.ErrDIDNotFound
	// ErrDIDResolutionFailed: the DID could not be resolved (network, status).
	ErrDIDResolutionFailed = identity.ErrDIDResolutionFailed
	// ErrNoSigningKey: the DID document declares no atproto signing key.
	ErrNoSigningKey = identity.ErrKeyNotDeclared
	// ErrNoPDS: the DID document declares no atproto PDS endpoint.
	ErrNoPDS = errors.New("DID document declares no atproto PDS endpoint")
)

// Config of a Directory.
type Config struct {
	// PLCURL is the PLC directory (optional; default DefaultPLCURL). Scheme
	// and host, with an optional port, no trailing slash.
	PLCURL string
	// HTTP client for PLC and did:web fetches (optional; default one with
	// a DefaultHTTPTimeout timeout). Its transport is wrapped: every
	// answer is cut off past MaxDocumentBytes, and, unless AllowPrivate,
	// hosts other than PLCURL's (did:web hosts, redirects) are dialed only
	// at public addresses.
	HTTP *http.Client
	// AllowPrivate lets did:web documents (and redirects away from the
	// PLC directory) be fetched from loopback and private addresses
	// (tests, private networks). Off, a did:web DID (anyone can send one,
	// in a service-auth token or on a relay's stream) cannot make the
	// consumer request a port inside its network.
	AllowPrivate bool
	// Capacity bounds the identities cached (optional; zero means
	// DefaultCapacity; negative is refused).
	Capacity int
	// HitTTL is how long a resolved identity is kept (optional; zero means
	// DefaultHitTTL).
	HitTTL time.Duration
	// ErrTTL is how long a failed resolution is remembered (optional; zero
	// means DefaultErrTTL).
	ErrTTL time.Duration
	// Registerer for the metrics (optional; nil records nothing).
	Registerer prometheus.Registerer
	// Logger (optional; default slog.Default()).
	Logger *slog.Logger
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.Capacity < 0:
		return fmt.Errorf("ident: config: Capacity %d is negative", c.Capacity)
	case c.HitTTL < 0:
		return fmt.Errorf("ident: config: HitTTL %s is negative", c.HitTTL)
	case c.ErrTTL < 0:
		return fmt.Errorf("ident: config: ErrTTL %s is negative", c.ErrTTL)
	}
	return nil
}

// Directory resolves identities through a bounded cache. It implements
// indigo's identity.Directory.
type Directory struct {
	cache   *identity.CacheDirectory
	metrics *Metrics
	log     *slog.Logger
}

var _ identity.Directory = (*Directory)(nil)

// New builds a Directory from cfg.
func New(cfg Config) (*Directory, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PLCURL == "" {
		cfg.PLCURL = DefaultPLCURL
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = DefaultCapacity
	}
	if cfg.HitTTL == 0 {
		cfg.HitTTL = DefaultHitTTL
	}
	if cfg.ErrTTL == 0 {
		cfg.ErrTTL = DefaultErrTTL
	}
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	guarded := *hc
	guarded.Transport = newDocTransport(hc.Transport, cfg.PLCURL, cfg.AllowPrivate)
	base := &identity.BaseDirectory{
		PLCURL:                 cfg.PLCURL,
		HTTPClient:             guarded,
		SkipHandleVerification: true,
		UserAgent:              "spaces-authz",
	}
	// The invalid-handle TTL is the hit TTL: handles are never verified
	// here, so every identity carries the invalid handle.
	cache := identity.NewCacheDirectory(base, cfg.Capacity, cfg.HitTTL, cfg.ErrTTL, cfg.HitTTL)
	return &Directory{cache: cache, metrics: NewMetrics(cfg.Registerer), log: log.With("component", "ident")}, nil
}

// LookupDID resolves did, from the cache when it holds it.
func (d *Directory) LookupDID(ctx context.Context, did syntax.DID) (*identity.Identity, error) {
	id, hit, err := d.cache.LookupDIDWithCacheState(ctx, did)
	switch {
	case err != nil:
		d.metrics.lookup(resultError)
		return nil, fmt.Errorf("ident: resolve %s: %w", did, err)
	case hit:
		d.metrics.lookup(resultHit)
	default:
		d.metrics.lookup(resultMiss)
	}
	return id, nil
}

// LookupHandle resolves a handle, then its DID (through the cache).
func (d *Directory) LookupHandle(ctx context.Context, h syntax.Handle) (*identity.Identity, error) {
	id, hit, err := d.cache.LookupHandleWithCacheState(ctx, h)
	switch {
	case err != nil:
		d.metrics.lookup(resultError)
		return nil, fmt.Errorf("ident: resolve handle %s: %w", h, err)
	case hit:
		d.metrics.lookup(resultHit)
	default:
		d.metrics.lookup(resultMiss)
	}
	return id, nil
}

// Lookup resolves a DID or a handle.
func (d *Directory) Lookup(ctx context.Context, atid syntax.AtIdentifier) (*identity.Identity, error) {
	if did, err := atid.AsDID(); err == nil {
		return d.LookupDID(ctx, did)
	}
	if h, err := atid.AsHandle(); err == nil {
		return d.LookupHandle(ctx, h)
	}
	return nil, fmt.Errorf("ident: lookup %q: neither a DID nor a handle", atid.String())
}

// Purge drops the cached identity of a DID or handle.
func (d *Directory) Purge(ctx context.Context, atid syntax.AtIdentifier) error {
	if err := d.cache.Purge(ctx, atid); err != nil {
		return fmt.Errorf("ident: purge: %w", err)
	}
	d.metrics.purge()
	return nil
}

// PurgeDID drops did's cached identity: its next lookup resolves it again.
// The stream's #identity events call it, and so does a failed signature
// check (the key may have rotated).
func (d *Directory) PurgeDID(ctx context.Context, did string) error {
	pd, err := syntax.ParseDID(did)
	if err != nil {
		return fmt.Errorf("ident: purge: %w", err)
	}
	return d.Purge(ctx, pd.AtIdentifier())
}

// lookupString parses did and looks it up.
func (d *Directory) lookupString(ctx context.Context, did string) (*identity.Identity, error) {
	pd, err := syntax.ParseDID(did)
	if err != nil {
		return nil, fmt.Errorf("ident: resolve: %w", err)
	}
	return d.LookupDID(ctx, pd)
}

// SigningKey is did's current atproto signing key.
func (d *Directory) SigningKey(ctx context.Context, did string) (atcrypto.PublicKey, error) {
	id, err := d.lookupString(ctx, did)
	if err != nil {
		return nil, err
	}
	k, err := id.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("ident: signing key of %s: %w", did, err)
	}
	return k, nil
}

// PDSEndpoint is the URL of did's PDS as its DID document declares it.
func (d *Directory) PDSEndpoint(ctx context.Context, did string) (string, error) {
	id, err := d.lookupString(ctx, did)
	if err != nil {
		return "", err
	}
	ep := id.PDSEndpoint()
	if ep == "" {
		return "", fmt.Errorf("ident: PDS of %s: %w", did, ErrNoPDS)
	}
	return ep, nil
}

// MaxDocumentBytes bounds an answer of the PLC directory or a did:web host
// (indigo reads it whole into memory); DID documents are a few KiB.
const MaxDocumentBytes = 1 << 20

// errDocumentTooLarge ends the read of an answer past MaxDocumentBytes.
var errDocumentTooLarge = fmt.Errorf("ident: DID document over %d bytes", MaxDocumentBytes)

// docTransport bounds answers and, unless private addresses are allowed,
// dials hosts other than the PLC directory's only at public addresses.
type docTransport struct {
	plcHost string
	plc     http.RoundTripper // the configured transport
	other   http.RoundTripper // the same with the SSRF-safe dialer
}

func newDocTransport(rt http.RoundTripper, plcURL string, allowPrivate bool) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	t := &docTransport{plc: rt, other: rt}
	if u, err := url.Parse(plcURL); err == nil {
		t.plcHost = u.Scheme + "://" + u.Host
	}
	if !allowPrivate {
		if ht, ok := rt.(*http.Transport); ok {
			c := ht.Clone()
			c.Proxy = nil // the proxy would be dialed, not the host
			c.DialContext = (&net.Dialer{Timeout: 30 * time.Second, Control: ssrf.PublicOnlyControl}).DialContext
			t.other = c
		} else {
			t.other = ssrf.PublicOnlyTransport()
		}
	}
	return t
}

func (t *docTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt := t.other
	if req.URL.Scheme+"://"+req.URL.Host == t.plcHost {
		rt = t.plc
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &cappedBody{ReadCloser: resp.Body, left: MaxDocumentBytes}
	return resp, nil
}

// cappedBody fails a read past its bound.
type cappedBody struct {
	io.ReadCloser
	left int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	if b.left -= int64(n); b.left < 0 {
		return n, errDocumentTooLarge
	}
	return n, err
}
