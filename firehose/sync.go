package firehose

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/spaces-authz/spaces-authz/view"
)

// Defaults of SyncConfig.
const (
	// DefaultMaxRepoBytes bounds a getRepo CAR (and the temp file it is
	// spooled to while it is read).
	DefaultMaxRepoBytes = 512 << 20
	// DefaultMaxRepoRecords bounds the records of projected collections
	// one snapshot keeps: each is decoded and held while the repo is
	// diffed (about 1.5 KB each in the reader), so they, not the CAR's
	// size, are what a resync's memory grows with.
	DefaultMaxRepoRecords = 50_000
	// DefaultMaxListRepos bounds the repos one ListAllRepos reads.
	DefaultMaxListRepos = 1_000_000
)

// listReposPageSize is the page size ListAllRepos asks for (the most the
// reference PDS serves).
const listReposPageSize = 1000

// SyncClient reads repos from a PDS (com.atproto.sync.getRepo, listRepos).
type SyncClient struct {
	base      string
	http      *http.Client
	maxBytes  int64
	tempDir   string
	maxRepos  int
	maxPages  int
	metrics   *Metrics
	snapshots snapshotLimits
	verifyKey func(ctx context.Context, did string) (atcrypto.PublicKey, error)
	purgeKey  func(ctx context.Context, did string) error
}

// SyncConfig configures a SyncClient.
type SyncConfig struct {
	// URL of the PDS (required), http(s) or ws(s); the path is ignored.
	URL string
	// HTTP client (optional; default one with a 5 minute timeout).
	HTTP *http.Client
	// MaxRepoBytes bounds one repo CAR (optional; zero means
	// DefaultMaxRepoBytes, 512 MiB). A larger repo is refused with
	// ErrRepoTooLarge as soon as the limit is crossed. It also bounds the
	// temp file a read spools the CAR to.
	MaxRepoBytes int64
	// MaxRepoRecords bounds the records one snapshot keeps (those of the
	// collections asked for; optional; zero means DefaultMaxRepoRecords).
	// A repo with more is refused with ErrRepoTooLarge.
	MaxRepoRecords int
	// TempDir is where GetRepo spools a CAR while reading it (optional; ""
	// means os.TempDir(), that is $TMPDIR or /tmp). It must be writable and
	// on disk, not tmpfs (that would be memory again), with room for
	// MaxRepoBytes per concurrent GetRepo. The file is unlinked as soon as
	// it is created, so nothing is left behind even after a crash.
	TempDir string
	// MaxListRepos bounds the repos one ListAllRepos reads (optional; zero
	// means DefaultMaxListRepos).
	MaxListRepos int
	// MaxListPages bounds the listRepos pages one ListAllRepos reads
	// (optional; zero means ten times the pages MaxListRepos fills at 1,000
	// a page: 10,000 by default).
	MaxListPages int
	// Metrics (optional).
	Metrics *Metrics
	// VerifyKey (optional) gives an account's current signing key: when
	// set, GetRepo checks the snapshot's commit signature against it and
	// fails with ErrUnverified when it does not match (Verifier.SigningKey
	// is one). Nil reads snapshots unverified.
	VerifyKey func(ctx context.Context, did string) (atcrypto.PublicKey, error)
	// PurgeKey (optional, with VerifyKey) drops a cached key: on a bad
	// signature GetRepo calls it and checks once more with a fresh key,
	// since the key may have rotated (Verifier.PurgeKey is one).
	PurgeKey func(ctx context.Context, did string) error
}

// NewSyncClient validates cfg.
func NewSyncClient(cfg SyncConfig) (*SyncClient, error) {
	u, err := hostURL(cfg.URL, false)
	if err != nil {
		return nil, fmt.Errorf("firehose: sync client: %w", err)
	}
	switch {
	case cfg.MaxRepoBytes < 0:
		return nil, fmt.Errorf("firehose: sync client: MaxRepoBytes %d is negative", cfg.MaxRepoBytes)
	case cfg.MaxRepoBytes > maxSpool:
		return nil, fmt.Errorf("firehose: sync client: MaxRepoBytes %d is above %d", cfg.MaxRepoBytes, int64(maxSpool))
	case cfg.MaxRepoRecords < 0:
		return nil, fmt.Errorf("firehose: sync client: MaxRepoRecords %d is negative", cfg.MaxRepoRecords)
	case cfg.MaxListRepos < 0:
		return nil, fmt.Errorf("firehose: sync client: MaxListRepos %d is negative", cfg.MaxListRepos)
	case cfg.MaxListPages < 0:
		return nil, fmt.Errorf("firehose: sync client: MaxListPages %d is negative", cfg.MaxListPages)
	}
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Minute}
	}
	c := &SyncClient{base: u.Scheme + "://" + u.Host, http: hc, maxBytes: cfg.MaxRepoBytes, tempDir: cfg.TempDir,
		maxRepos: cfg.MaxListRepos, maxPages: cfg.MaxListPages, metrics: cfg.Metrics, snapshots: defaultSnapshotLimits,
		verifyKey: cfg.VerifyKey, purgeKey: cfg.PurgeKey}
	if c.maxBytes == 0 {
		c.maxBytes = DefaultMaxRepoBytes
	}
	if c.maxRepos == 0 {
		c.maxRepos = DefaultMaxListRepos
	}
	if cfg.MaxRepoRecords > 0 {
		c.snapshots.maxRecords = cfg.MaxRepoRecords
	}
	if c.maxPages == 0 {
		c.maxPages = 10 * ((c.maxRepos + listReposPageSize - 1) / listReposPageSize)
	}
	c.metrics.repoFetchResults()
	return c, nil
}

// Record is one record of a repo snapshot.
type Record struct {
	Collection string
	RKey       string
	CID        cid.Cid
	// Value is the decoded record; nil when Err is set.
	Value map[string]any
	Err   *OpError
}

// Path is the record's repo path.
func (r *Record) Path() string { return r.Collection + "/" + r.RKey }

// Snapshot is the current state of one repo as read by getRepo: its commit
// rev and the records that passed the collection filter, sorted by path.
type Snapshot struct {
	DID     string
	Rev     string
	Commit  cid.Cid
	Records []Record
}

// Repo status errors that getRepo answers with.
var (
	ErrRepoNotFound  = errors.New("repo not found")
	ErrRepoInactive  = errors.New("repo not active")
	errNotXRPCAnswer = errors.New("not an XRPC error body")
)

// ErrRepoTooLarge is returned (wrapped, with the DID and the limit) by
// GetRepo for a repo whose CAR is larger than SyncConfig.MaxRepoBytes, or
// that has more records of the collections read than MaxRepoRecords. It
// is lasting for that repo until the limit is raised: retrying reads the
// same bytes again.
var ErrRepoTooLarge = errors.New("repo is larger than the limit (SyncConfig.MaxRepoBytes, MaxRepoRecords)")

// Paging errors of ListAllRepos: the PDS's listRepos cursors don't lead to
// an end.
var (
	// ErrListReposLoop: the PDS returned a cursor it had returned before.
	ErrListReposLoop = errors.New("listRepos returned a cursor it had already returned (its paging loops)")
	// ErrListReposLimit: more repos or pages than SyncConfig allows.
	ErrListReposLimit = errors.New("listRepos goes on past the limit (SyncConfig.MaxListRepos, MaxListPages)")
)

// repoFetchResults are the label values of the repo fetch counter.
var repoFetchResults = []string{"ok", "not_found", "inactive", "too_large", "unverified", "error"}

// repoFetchResults creates every result's series, so that they exist at
// zero before the first fetch.
func (m *Metrics) repoFetchResults() {
	if m == nil {
		return
	}
	for _, r := range repoFetchResults {
		m.repoFetches.WithLabelValues(r)
	}
}

// GetRepo fetches did's repo CAR and reads the records of collections that
// pass keep (nil keeps all). The CAR is streamed to a temp file (see
// SyncConfig.TempDir) and read from there, so memory does not grow with
// the repo (snapshot.go). Every block is checked against its CID.
// A repo the PDS doesn't have wraps ErrRepoNotFound; a deactivated, taken
// down or suspended one wraps ErrRepoInactive (the *XRPCError says which);
// one over SyncConfig.MaxRepoBytes wraps ErrRepoTooLarge; with
// SyncConfig.VerifyKey, one whose commit is not signed by the account's
// key (or whose key can't be found) wraps ErrUnverified (an
// *UnverifiedError says which).
func (c *SyncClient) GetRepo(ctx context.Context, did string, keep func(collection string) bool) (*Snapshot, error) {
	start := time.Now()
	snap, err := c.getRepo(ctx, did, keep)
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrRepoNotFound):
		result = "not_found"
	case errors.Is(err, ErrRepoInactive):
		result = "inactive"
	case errors.Is(err, ErrRepoTooLarge):
		result = "too_large"
	case errors.Is(err, ErrUnverified):
		result = "unverified"
	default:
		result = "error"
	}
	c.metrics.repoFetch(result, time.Since(start).Seconds())
	return snap, err
}

func (c *SyncClient) getRepo(ctx context.Context, did string, keep func(string) bool) (*Snapshot, error) {
	if _, err := syntax.ParseDID(did); err != nil {
		return nil, fmt.Errorf("firehose: get repo: %w", err)
	}
	resp, err := c.get(ctx, "com.atproto.sync.getRepo", url.Values{"did": {did}})
	if err != nil {
		return nil, fmt.Errorf("firehose: get repo %s: %w", did, err)
	}
	defer resp.Body.Close()
	tooLarge := fmt.Errorf("firehose: get repo %s: %w: more than %d bytes", did, ErrRepoTooLarge, c.maxBytes)
	if resp.ContentLength > c.maxBytes {
		return nil, tooLarge
	}
	spool, err := newFileSpool(c.tempDir)
	if err != nil {
		return nil, fmt.Errorf("firehose: get repo %s: %w", did, err)
	}
	defer spool.Close()
	body := &capReader{r: resp.Body, max: c.maxBytes}
	snap, st, err := readSnapshotStats(ctx, io.TeeReader(body, spool), spool, keep, c.snapshots)
	switch {
	case errors.Is(err, ErrRepoTooLarge) && body.n > c.maxBytes:
		return nil, tooLarge
	case err != nil:
		return nil, fmt.Errorf("firehose: get repo %s: %w", did, err)
	case snap.DID != did:
		return nil, fmt.Errorf("firehose: get repo %s: CAR is for %s", did, snap.DID)
	}
	if c.verifyKey != nil {
		if err := checkSignature(ctx, st.commit, c.verifyKey, c.purgeKey); err != nil {
			return nil, fmt.Errorf("firehose: get repo %s: %w", did, err)
		}
	}
	return snap, nil
}

// capReader fails with ErrRepoTooLarge as soon as more than max bytes
// have arrived.
type capReader struct {
	r      io.Reader
	n, max int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n > c.max {
		return 0, ErrRepoTooLarge
	}
	if rest := c.max + 1 - c.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	k, err := c.r.Read(p)
	c.n += int64(k)
	if c.n > c.max {
		return k, ErrRepoTooLarge
	}
	return k, err
}

// fileSpool is the temp file a CAR is written to as it is read (buffered)
// and read back from by offset.
type fileSpool struct {
	f       *os.File
	w       *bufio.Writer
	removed bool
}

func newFileSpool(dir string) (*fileSpool, error) {
	f, err := os.CreateTemp(dir, "getrepo-*.car")
	if err != nil {
		return nil, fmt.Errorf("spool CAR: %w (TMPDIR or SyncConfig.TempDir must name a writable directory on disk)", err)
	}
	// Unlinked at once where the OS allows it (not Windows): the file then
	// lives as long as the descriptor, and a crash leaves nothing behind.
	removed := os.Remove(f.Name()) == nil
	return &fileSpool{f: f, w: bufio.NewWriterSize(f, scanBufBytes), removed: removed}, nil
}

func (s *fileSpool) Write(p []byte) (int, error) { return s.w.Write(p) }

func (s *fileSpool) ReadAt(p []byte, off int64) (int, error) {
	if s.w.Buffered() > 0 {
		if err := s.w.Flush(); err != nil {
			return 0, fmt.Errorf("spool CAR: %w", err)
		}
	}
	return s.f.ReadAt(p, off)
}

func (s *fileSpool) Close() error {
	err := s.f.Close()
	if !s.removed {
		if rerr := os.Remove(s.f.Name()); err == nil {
			err = rerr
		}
	}
	return err
}

// RepoInfo is one entry of listRepos.
type RepoInfo struct {
	DID    string `json:"did"`
	Head   string `json:"head"`
	Rev    string `json:"rev"`
	Active *bool  `json:"active,omitempty"`
	Status string `json:"status,omitempty"`
}

// IsActive treats a missing active field as active (older PDSes).
func (r RepoInfo) IsActive() bool { return r.Active == nil || *r.Active }

// ListRepos returns one page of listRepos and the cursor of the next page
// ("" at the end).
func (c *SyncClient) ListRepos(ctx context.Context, cursor string, limit int) ([]RepoInfo, string, error) {
	q := url.Values{"limit": {fmt.Sprint(limit)}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	resp, err := c.get(ctx, "com.atproto.sync.listRepos", q)
	if err != nil {
		return nil, "", fmt.Errorf("firehose: list repos: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Cursor string     `json:"cursor"`
		Repos  []RepoInfo `json:"repos"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&out); err != nil {
		return nil, "", fmt.Errorf("firehose: list repos: decode: %w", err)
	}
	if len(out.Repos) == 0 {
		out.Cursor = ""
	}
	return out.Repos, out.Cursor, nil
}

// ListAllRepos pages through listRepos, calling fn for each repo. A PDS
// whose paging does not end is refused: a cursor returned twice wraps
// ErrListReposLoop; more repos or pages than SyncConfig allows wraps
// ErrListReposLimit (fn has then been called for the repos before).
func (c *SyncClient) ListAllRepos(ctx context.Context, fn func(RepoInfo) error) error {
	// Cursors seen, by digest: a hostile PDS's cursors can be long.
	seen := map[[sha256.Size]byte]struct{}{}
	cursor := ""
	total := 0
	for page := 1; ; page++ {
		if page > c.maxPages {
			return fmt.Errorf("firehose: list repos: %w: more than %d pages", ErrListReposLimit, c.maxPages)
		}
		repos, next, err := c.ListRepos(ctx, cursor, listReposPageSize)
		if err != nil {
			return err
		}
		if total += len(repos); total > c.maxRepos {
			return fmt.Errorf("firehose: list repos: %w: more than %d repos", ErrListReposLimit, c.maxRepos)
		}
		for _, r := range repos {
			if err := fn(r); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		key := sha256.Sum256([]byte(next))
		if _, dup := seen[key]; dup {
			return fmt.Errorf("firehose: list repos: %w: cursor %q again after %d pages", ErrListReposLoop, view.Clip(next), page)
		}
		seen[key] = struct{}{}
		cursor = next
	}
}

func (c *SyncClient) get(ctx context.Context, method string, q url.Values) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/xrpc/"+method+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	xe := xrpcErrorOf(resp)
	switch xe.Name {
	case "RepoNotFound":
		return nil, fmt.Errorf("%w: %w", ErrRepoNotFound, xe)
	case "RepoDeactivated", "RepoTakendown", "RepoSuspended":
		return nil, fmt.Errorf("%w: %w", ErrRepoInactive, xe)
	}
	return nil, xe
}

// xrpcErrorOf reads a non-2xx answer's XRPC error body (bounded): its
// name and message, or the HTTP status text when the body is not one.
func xrpcErrorOf(resp *http.Response) *XRPCError {
	xe := &XRPCError{Status: resp.StatusCode}
	var body struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err == nil {
		xe.Name, xe.Message = body.Error, view.Clip(body.Message)
	} else {
		xe.Name, xe.Message = http.StatusText(resp.StatusCode), errNotXRPCAnswer.Error()
	}
	return xe
}
