package firehose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/spaces-authz/spaces-authz/view"
)

// DefaultMaxRepoBytes bounds a getRepo CAR read into memory.
const DefaultMaxRepoBytes = 512 << 20

// SyncClient reads repos from a PDS (com.atproto.sync.getRepo, listRepos).
type SyncClient struct {
	base     string
	http     *http.Client
	maxBytes int64
	metrics  *Metrics
}

// SyncConfig configures a SyncClient.
type SyncConfig struct {
	// URL of the PDS (required), http(s) or ws(s); the path is ignored.
	URL string
	// HTTP client (optional; default one with a 5 minute timeout).
	HTTP *http.Client
	// MaxRepoBytes bounds one CAR (default 512 MiB).
	MaxRepoBytes int64
	// Metrics (optional).
	Metrics *Metrics
}

// NewSyncClient validates cfg.
func NewSyncClient(cfg SyncConfig) (*SyncClient, error) {
	u, err := hostURL(cfg.URL, false)
	if err != nil {
		return nil, fmt.Errorf("firehose: sync client: %w", err)
	}
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Minute}
	}
	maxBytes := cfg.MaxRepoBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxRepoBytes
	}
	return &SyncClient{base: u.Scheme + "://" + u.Host, http: hc, maxBytes: maxBytes, metrics: cfg.Metrics}, nil
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

// GetRepo fetches did's repo CAR and reads the records of collections that
// pass keep (nil keeps all). Each record block is checked against its CID.
// A repo the PDS doesn't have wraps ErrRepoNotFound; a deactivated, taken
// down or suspended one wraps ErrRepoInactive (the *XRPCError says which).
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
	body, err := c.get(ctx, "com.atproto.sync.getRepo", url.Values{"did": {did}})
	if err != nil {
		return nil, fmt.Errorf("firehose: get repo %s: %w", did, err)
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, c.maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("firehose: get repo %s: read body: %w", did, err)
	}
	if int64(len(data)) > c.maxBytes {
		return nil, fmt.Errorf("firehose: get repo %s: CAR larger than %d bytes", did, c.maxBytes)
	}
	snap, err := ReadRepoCAR(ctx, data, keep)
	if err != nil {
		return nil, fmt.Errorf("firehose: get repo %s: %w", did, err)
	}
	if snap.DID != did {
		return nil, fmt.Errorf("firehose: get repo %s: CAR is for %s", did, snap.DID)
	}
	return snap, nil
}

// ReadRepoCAR reads a full repo export with indigo and returns its records
// whose collection passes keep (nil keeps all), sorted by path.
func ReadRepoCAR(ctx context.Context, car []byte, keep func(string) bool) (*Snapshot, error) {
	commit, r, err := repo.LoadRepoFromCAR(ctx, bytes.NewReader(car))
	if err != nil {
		return nil, fmt.Errorf("read CAR: %w", err)
	}
	snap := &Snapshot{DID: commit.DID, Rev: commit.Rev, Commit: commit.Data}
	err = r.MST.Walk(func(key []byte, val cid.Cid) error {
		path := string(key)
		coll, rkey, ok := strings.Cut(path, "/")
		if !ok {
			return nil
		}
		if keep != nil && !keep(coll) {
			return nil
		}
		rec := Record{Collection: coll, RKey: rkey, CID: val}
		blk, err := r.RecordStore.Get(ctx, val)
		switch {
		case err != nil:
			rec.Err = &OpError{Reason: ReasonMissingBlock, Detail: "record block " + val.String() + " is not in the CAR"}
		default:
			sum, herr := val.Prefix().Sum(blk.RawData())
			if herr != nil || !sum.Equals(val) {
				rec.Err = &OpError{Reason: ReasonCIDMismatch, Detail: "block does not hash to " + val.String()}
				break
			}
			rec.Value, rec.Err = DecodeRecord(blk.RawData())
		}
		snap.Records = append(snap.Records, rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk MST: %w", err)
	}
	sort.Slice(snap.Records, func(i, j int) bool { return snap.Records[i].Path() < snap.Records[j].Path() })
	return snap, nil
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
	body, err := c.get(ctx, "com.atproto.sync.listRepos", q)
	if err != nil {
		return nil, "", fmt.Errorf("firehose: list repos: %w", err)
	}
	defer body.Close()
	var out struct {
		Cursor string     `json:"cursor"`
		Repos  []RepoInfo `json:"repos"`
	}
	if err := json.NewDecoder(io.LimitReader(body, 64<<20)).Decode(&out); err != nil {
		return nil, "", fmt.Errorf("firehose: list repos: decode: %w", err)
	}
	if len(out.Repos) == 0 {
		out.Cursor = ""
	}
	return out.Repos, out.Cursor, nil
}

// ListAllRepos pages through listRepos, calling fn for each repo.
func (c *SyncClient) ListAllRepos(ctx context.Context, fn func(RepoInfo) error) error {
	cursor := ""
	for {
		repos, next, err := c.ListRepos(ctx, cursor, 1000)
		if err != nil {
			return err
		}
		for _, r := range repos {
			if err := fn(r); err != nil {
				return err
			}
		}
		if next == "" || next == cursor {
			return nil
		}
		cursor = next
	}
}

func (c *SyncClient) get(ctx context.Context, method string, q url.Values) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/xrpc/"+method+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp.Body, nil
	}
	defer resp.Body.Close()
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
	switch xe.Name {
	case "RepoNotFound":
		return nil, fmt.Errorf("%w: %w", ErrRepoNotFound, xe)
	case "RepoDeactivated", "RepoTakendown", "RepoSuspended":
		return nil, fmt.Errorf("%w: %w", ErrRepoInactive, xe)
	}
	return nil, xe
}
