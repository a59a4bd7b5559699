package firehose

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/util/ssrf"
	"golang.org/x/time/rate"

	"github.com/spaces-authz/spaces-authz/view"
)

// Defaults of RouterConfig.
const (
	DefaultHostConcurrency = 4
	DefaultHostRate        = 10
	DefaultMaxHosts        = 10_000
)

// ErrNoPDS is wrapped when an account's DID document names no PDS that can
// be read: none at all, or one this router refuses (a private address, or
// plain http, without RouterConfig.AllowPrivate).
var ErrNoPDS = errors.New("the account's DID document names no PDS this consumer may read")

// Resolver finds the PDS that hosts an account: the service endpoint of
// its DID document (internal/ident resolves it with indigo's identity
// package, cached).
type Resolver interface {
	PDSEndpoint(ctx context.Context, did string) (string, error)
}

// RepoLister lists the repos a rebuild reads.
type RepoLister interface {
	ListAllRepos(ctx context.Context, fn func(RepoInfo) error) error
}

// RouterConfig configures a Router.
type RouterConfig struct {
	// Resolver finds each account's PDS (required).
	Resolver Resolver
	// Sync is the template of every host's SyncClient (its URL is
	// ignored; HTTP is replaced by one that refuses private addresses
	// unless AllowPrivate).
	Sync SyncConfig
	// HostConcurrency bounds the getRepo calls in flight to one host
	// (default DefaultHostConcurrency).
	HostConcurrency int
	// HostRate bounds the getRepo calls per second to one host (default
	// DefaultHostRate; negative: no limit).
	HostRate float64
	// MaxHosts bounds the hosts whose clients and limits are kept (the least
	// recently used are dropped; default DefaultMaxHosts).
	MaxHosts int
	// AllowPrivate lets DID documents send the router to loopback, private
	// and link-local addresses and to plain http (tests, a private network
	// of PDSes). Off, a hostile account cannot point the consumer at a port
	// inside its cluster (SSRF): the dial is refused after DNS resolution.
	AllowPrivate bool
	// Lister lists the repos a rebuild reads (required for rebuilds).
	Lister RepoLister
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Router reads each repo from the account's own PDS, found through its DID
// document, with per-host limits on concurrent and per-second getRepo
// calls. It is the Fetcher of a consumer that follows a relay: the relay's
// own getRepo is a redirect, and it is an intermediary, not the authority
// for the repo.
type Router struct {
	cfg  RouterConfig
	http *http.Client
	log  *slog.Logger

	mu    sync.Mutex
	hosts map[string]*list.Element // of *routeHost, most recent in front
	lru   *list.List
}

type routeHost struct {
	base   string
	client *SyncClient
	sem    chan struct{}
	limit  *rate.Limiter
}

// NewRouter validates cfg.
func NewRouter(cfg RouterConfig) (*Router, error) {
	if cfg.Resolver == nil {
		return nil, errors.New("firehose: router: Resolver is required")
	}
	if cfg.HostConcurrency == 0 {
		cfg.HostConcurrency = DefaultHostConcurrency
	}
	if cfg.HostRate == 0 {
		cfg.HostRate = DefaultHostRate
	}
	if cfg.MaxHosts == 0 {
		cfg.MaxHosts = DefaultMaxHosts
	}
	if cfg.HostConcurrency < 0 || cfg.MaxHosts < 0 {
		return nil, fmt.Errorf("firehose: router: HostConcurrency %d and MaxHosts %d must be positive",
			cfg.HostConcurrency, cfg.MaxHosts)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	hc := cfg.Sync.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Minute}
	}
	if !cfg.AllowPrivate {
		c := *hc
		c.Transport = ssrf.PublicOnlyTransport()
		hc = &c
	}
	// Check the template once, with a placeholder host.
	tpl := cfg.Sync
	tpl.URL, tpl.HTTP = "https://pds.invalid", hc
	if _, err := NewSyncClient(tpl); err != nil {
		return nil, fmt.Errorf("firehose: router: %w", err)
	}
	return &Router{cfg: cfg, http: hc, log: cfg.Logger, hosts: map[string]*list.Element{}, lru: list.New()}, nil
}

// GetRepo reads did's repo from the PDS its DID document names, within
// that host's limits. A DID document that names no usable PDS wraps ErrNoPDS
// (the resync is retried with backoff: a document can be fixed).
func (r *Router) GetRepo(ctx context.Context, did string, keep func(collection string) bool) (*Snapshot, error) {
	endpoint, err := r.cfg.Resolver.PDSEndpoint(ctx, did)
	if err != nil {
		return nil, fmt.Errorf("firehose: get repo %s: resolve its PDS: %w", did, err)
	}
	h, err := r.host(endpoint)
	if err != nil {
		return nil, fmt.Errorf("firehose: get repo %s: %w", did, err)
	}
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-h.sem }()
	if h.limit != nil {
		if err := h.limit.Wait(ctx); err != nil {
			return nil, err
		}
	}
	return h.client.GetRepo(ctx, did, keep)
}

// ListAllRepos lists the repos of a rebuild with RouterConfig.Lister.
func (r *Router) ListAllRepos(ctx context.Context, fn func(RepoInfo) error) error {
	if r.cfg.Lister == nil {
		return errors.New("firehose: router: no repo lister configured")
	}
	return r.cfg.Lister.ListAllRepos(ctx, fn)
}

// Host returns the base URL a DID's repo is read from (status, tests).
func (r *Router) Host(ctx context.Context, did string) (string, error) {
	endpoint, err := r.cfg.Resolver.PDSEndpoint(ctx, did)
	if err != nil {
		return "", err
	}
	base, err := r.baseOf(endpoint)
	if err != nil {
		return "", err
	}
	return base, nil
}

func (r *Router) baseOf(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("%w: endpoint %q is not a URL", ErrNoPDS, view.Clip(endpoint))
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && r.cfg.AllowPrivate:
	default:
		return "", fmt.Errorf("%w: endpoint %q: scheme must be https", ErrNoPDS, view.Clip(endpoint))
	}
	return u.Scheme + "://" + strings.ToLower(u.Host), nil
}

func (r *Router) host(endpoint string) (*routeHost, error) {
	base, err := r.baseOf(endpoint)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.hosts[base]; ok {
		r.lru.MoveToFront(el)
		return el.Value.(*routeHost), nil
	}
	sc := r.cfg.Sync
	sc.URL, sc.HTTP = base, r.http
	client, err := NewSyncClient(sc)
	if err != nil {
		return nil, err
	}
	h := &routeHost{base: base, client: client, sem: make(chan struct{}, r.cfg.HostConcurrency)}
	if r.cfg.HostRate > 0 {
		burst := max(1, int(r.cfg.HostRate))
		h.limit = rate.NewLimiter(rate.Limit(r.cfg.HostRate), burst)
	}
	r.hosts[base] = r.lru.PushFront(h)
	for r.lru.Len() > r.cfg.MaxHosts {
		old := r.lru.Back()
		r.lru.Remove(old)
		delete(r.hosts, old.Value.(*routeHost).base)
	}
	return h, nil
}

// CollectionLister lists the repos that hold records of some collections,
// with com.atproto.sync.listReposByCollection (served by indigo's
// collectiondir, and by some relays). Where that is not served it falls back
// to Fallback's listRepos, every repo of the network, and says so.
type CollectionLister struct {
	// URL of the service answering listReposByCollection (required).
	URL string
	// Collections whose repos are listed (required).
	Collections []string
	// Fallback lists every repo when URL does not serve
	// listReposByCollection (nil: fail instead).
	Fallback RepoLister
	// HTTP client (default one with a one minute timeout).
	HTTP *http.Client
	// MaxRepos bounds the distinct DIDs listed (default DefaultMaxListRepos).
	MaxRepos int
	// MaxPages bounds the pages read per collection (default ten times
	// the pages MaxRepos fills): a service whose pages repeat DIDs under
	// fresh cursors would otherwise be paged forever.
	MaxPages int
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// collectionPage is the page size asked of listReposByCollection
// (collectiondir serves up to 10,000).
const collectionPage = 2000

// ListAllRepos calls fn once for each DID that holds a record of one of
// the collections (DIDs listed under several collections are called once).
func (l *CollectionLister) ListAllRepos(ctx context.Context, fn func(RepoInfo) error) error {
	log := l.Logger
	if log == nil {
		log = slog.Default()
	}
	hc := l.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: time.Minute}
	}
	maxRepos := l.MaxRepos
	if maxRepos == 0 {
		maxRepos = DefaultMaxListRepos
	}
	maxPages := l.MaxPages
	if maxPages == 0 {
		maxPages = 10 * ((maxRepos + collectionPage - 1) / collectionPage)
	}
	base, err := hostURL(l.URL, false)
	if err != nil {
		return fmt.Errorf("firehose: list repos by collection: %w", err)
	}
	seen := map[string]struct{}{}
	for _, coll := range l.Collections {
		cursor := ""
		cursors := map[[sha256.Size]byte]struct{}{} // by digest: a hostile service's cursors can be long
		for page := 1; ; page++ {
			if page > maxPages {
				return fmt.Errorf("firehose: list repos by collection %s: %w: more than %d pages", coll, ErrListReposLimit, maxPages)
			}
			dids, next, err := l.page(ctx, hc, base, coll, cursor)
			var xe *XRPCError
			if errors.As(err, &xe) && unserved(xe) && l.Fallback != nil {
				log.Warn("listReposByCollection is not served: a rebuild lists EVERY repo of the source "+
					"and reads each with getRepo (a relay: tens of millions); point --collection-dir at a "+
					"collection directory (indigo's collectiondir)", "url", base.Host, "answer", xe.Error())
				return l.Fallback.ListAllRepos(ctx, func(ri RepoInfo) error {
					if _, dup := seen[ri.DID]; dup {
						return nil
					}
					return fn(ri)
				})
			}
			if err != nil {
				return fmt.Errorf("firehose: list repos by collection %s: %w", coll, err)
			}
			for _, did := range dids {
				if _, dup := seen[did]; dup {
					continue
				}
				if len(seen) >= maxRepos {
					return fmt.Errorf("firehose: list repos by collection: %w: more than %d repos", ErrListReposLimit, maxRepos)
				}
				seen[did] = struct{}{}
				if err := fn(RepoInfo{DID: did}); err != nil {
					return err
				}
			}
			if next == "" || len(dids) == 0 {
				break
			}
			key := sha256.Sum256([]byte(next))
			if _, dup := cursors[key]; dup {
				return fmt.Errorf("firehose: list repos by collection %s: %w: cursor %q again", coll, ErrListReposLoop, view.Clip(next))
			}
			cursors[key] = struct{}{}
			cursor = next
		}
	}
	return nil
}

// unserved reports whether an XRPC answer means the method is not there.
func unserved(xe *XRPCError) bool {
	return xe.Status == http.StatusNotFound || xe.Status == http.StatusNotImplemented ||
		xe.Name == "MethodNotImplemented"
}

func (l *CollectionLister) page(ctx context.Context, hc *http.Client, base *url.URL, coll, cursor string) ([]string, string, error) {
	q := url.Values{"collection": {coll}, "limit": {fmt.Sprint(collectionPage)}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	u := base.Scheme + "://" + base.Host + "/xrpc/com.atproto.sync.listReposByCollection?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, "", xrpcErrorOf(resp)
	}
	var out struct {
		Cursor string `json:"cursor"`
		Repos  []struct {
			DID string `json:"did"`
		} `json:"repos"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&out); err != nil {
		return nil, "", fmt.Errorf("decode: %w", err)
	}
	dids := make([]string, 0, len(out.Repos))
	for _, r := range out.Repos {
		dids = append(dids, r.DID)
	}
	return dids, out.Cursor, nil
}
