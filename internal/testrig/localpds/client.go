package localpds

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client is a minimal XRPC client for the com.atproto endpoints the e2e tests
// need. The zero HTTP field means a client with a 30 s timeout.
type Client struct {
	// BaseURL is the PDS base URL, e.g. http://127.0.0.1:2583.
	BaseURL string
	// HTTP is the HTTP client to use; nil means a default one.
	HTTP *http.Client
}

// NewClient returns a Client for the PDS at baseURL.
func NewClient(baseURL string) *Client {
	return &Client{BaseURL: baseURL, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

// Session is an authenticated account session (createAccount, createSession).
type Session struct {
	DID        string `json:"did"`
	Handle     string `json:"handle"`
	AccessJwt  string `json:"accessJwt"`
	RefreshJwt string `json:"refreshJwt"`
}

// RecordRef is the result of createRecord and putRecord.
type RecordRef struct {
	// URI is the record's at:// URI and CID the CID of the record.
	URI string `json:"uri"`
	CID string `json:"cid"`
	// Rev is the revision (TID) of the commit that wrote the record, and
	// CommitCID that commit's CID. Both are empty when putRecord was a no-op
	// (the record was already identical), which makes no commit.
	Rev       string `json:"-"`
	CommitCID string `json:"-"`
	// ValidationStatus is "valid", or "unknown" for a collection the PDS has
	// no lexicon for.
	ValidationStatus string `json:"validationStatus,omitempty"`
}

// Write is one operation of an applyWrites batch.
type Write struct {
	// Action is "create", "update" or "delete".
	Action     string
	Collection string
	// RKey is the record key; optional for create (the PDS picks a TID).
	RKey string
	// Value is the record; unused for delete.
	Value map[string]any
}

// WriteResult is the result of one Write of an applyWrites batch. URI and CID
// are empty for a delete.
type WriteResult struct {
	Type             string `json:"$type"`
	URI              string `json:"uri,omitempty"`
	CID              string `json:"cid,omitempty"`
	ValidationStatus string `json:"validationStatus,omitempty"`
}

// Record is a record as listed by listRecords or read by getRecord.
type Record struct {
	URI   string         `json:"uri"`
	CID   string         `json:"cid"`
	Value map[string]any `json:"value"`
}

// RepoStatus is the result of com.atproto.sync.getRepoStatus.
type RepoStatus struct {
	DID    string `json:"did"`
	Active bool   `json:"active"`
	// Status is set when the repo is not active: "takendown",
	// "deactivated", "suspended", ...
	Status string `json:"status,omitempty"`
	Rev    string `json:"rev,omitempty"`
}

// XRPCError is an error response from the PDS.
type XRPCError struct {
	// NSID is the method that failed, e.g. com.atproto.repo.createRecord.
	NSID string
	// Status is the HTTP status code.
	Status int
	// Name is the XRPC error name, e.g. InvalidRequest, AccountDeactivated.
	Name string
	// Message is the human-readable message.
	Message string
}

func (e *XRPCError) Error() string {
	return fmt.Sprintf("%s: HTTP %d %s: %s", e.NSID, e.Status, e.Name, e.Message)
}

// commitMeta is the commit field of repo write responses.
type commitMeta struct {
	CID string `json:"cid"`
	Rev string `json:"rev"`
}

// CreateAccount creates an account (com.atproto.server.createAccount) and
// returns its session. The handle must be "<name>.test", name >= 3 chars.
func (c *Client) CreateAccount(ctx context.Context, handle, email, password string) (Session, error) {
	var s Session
	err := c.call(ctx, http.MethodPost, "com.atproto.server.createAccount", nil, "",
		map[string]any{"handle": handle, "email": email, "password": password}, &s)
	if err != nil {
		return Session{}, fmt.Errorf("localpds: create account %s: %w", handle, err)
	}
	return s, nil
}

// CreateSession logs in (com.atproto.server.createSession) with a handle or
// DID and a password.
func (c *Client) CreateSession(ctx context.Context, identifier, password string) (Session, error) {
	var s Session
	err := c.call(ctx, http.MethodPost, "com.atproto.server.createSession", nil, "",
		map[string]any{"identifier": identifier, "password": password}, &s)
	if err != nil {
		return Session{}, fmt.Errorf("localpds: create session %s: %w", identifier, err)
	}
	return s, nil
}

// writeResponse is the body of createRecord and putRecord responses.
type writeResponse struct {
	RecordRef
	Commit *commitMeta `json:"commit"`
}

func (w writeResponse) ref() RecordRef {
	r := w.RecordRef
	if w.Commit != nil {
		r.Rev, r.CommitCID = w.Commit.Rev, w.Commit.CID
	}
	return r
}

// CreateRecord creates a record (com.atproto.repo.createRecord) in the
// session's repo. rkey may be empty (the PDS picks a TID). A record without
// "$type" gets $type = collection.
func (c *Client) CreateRecord(ctx context.Context, sess Session, collection, rkey string, record map[string]any) (RecordRef, error) {
	in := map[string]any{"repo": sess.DID, "collection": collection, "record": record}
	if rkey != "" {
		in["rkey"] = rkey
	}
	var out writeResponse
	if err := c.call(ctx, http.MethodPost, "com.atproto.repo.createRecord", nil, bearer(sess), in, &out); err != nil {
		return RecordRef{}, fmt.Errorf("localpds: create record %s/%s: %w", collection, rkey, err)
	}
	return out.ref(), nil
}

// PutRecord creates or replaces a record (com.atproto.repo.putRecord). Rev is
// empty when the record was already identical (no commit).
func (c *Client) PutRecord(ctx context.Context, sess Session, collection, rkey string, record map[string]any) (RecordRef, error) {
	in := map[string]any{"repo": sess.DID, "collection": collection, "rkey": rkey, "record": record}
	var out writeResponse
	if err := c.call(ctx, http.MethodPost, "com.atproto.repo.putRecord", nil, bearer(sess), in, &out); err != nil {
		return RecordRef{}, fmt.Errorf("localpds: put record %s/%s: %w", collection, rkey, err)
	}
	return out.ref(), nil
}

// DeleteRecord deletes a record (com.atproto.repo.deleteRecord) and returns
// the rev of the commit. The rev is empty when the record did not exist (the
// PDS treats that as a no-op, not an error).
func (c *Client) DeleteRecord(ctx context.Context, sess Session, collection, rkey string) (string, error) {
	in := map[string]any{"repo": sess.DID, "collection": collection, "rkey": rkey}
	var out struct {
		Commit *commitMeta `json:"commit"`
	}
	if err := c.call(ctx, http.MethodPost, "com.atproto.repo.deleteRecord", nil, bearer(sess), in, &out); err != nil {
		return "", fmt.Errorf("localpds: delete record %s/%s: %w", collection, rkey, err)
	}
	if out.Commit == nil {
		return "", nil
	}
	return out.Commit.Rev, nil
}

// ApplyWrites applies several writes atomically as ONE commit
// (com.atproto.repo.applyWrites) and returns the commit's rev and one result
// per write, in order.
func (c *Client) ApplyWrites(ctx context.Context, sess Session, writes []Write) (string, []WriteResult, error) {
	ws := make([]map[string]any, 0, len(writes))
	for i, w := range writes {
		switch w.Action {
		case "create", "update", "delete":
		default:
			return "", nil, fmt.Errorf("localpds: apply writes: write %d: unknown action %q", i, w.Action)
		}
		m := map[string]any{"$type": "com.atproto.repo.applyWrites#" + w.Action, "collection": w.Collection}
		if w.RKey != "" {
			m["rkey"] = w.RKey
		}
		if w.Action != "delete" {
			m["value"] = w.Value
		}
		ws = append(ws, m)
	}
	var out struct {
		Commit  *commitMeta   `json:"commit"`
		Results []WriteResult `json:"results"`
	}
	in := map[string]any{"repo": sess.DID, "writes": ws}
	if err := c.call(ctx, http.MethodPost, "com.atproto.repo.applyWrites", nil, bearer(sess), in, &out); err != nil {
		return "", nil, fmt.Errorf("localpds: apply writes: %w", err)
	}
	rev := ""
	if out.Commit != nil {
		rev = out.Commit.Rev
	}
	return rev, out.Results, nil
}

// GetRecord reads one record (com.atproto.repo.getRecord).
func (c *Client) GetRecord(ctx context.Context, did, collection, rkey string) (Record, error) {
	q := url.Values{"repo": {did}, "collection": {collection}, "rkey": {rkey}}
	var out Record
	if err := c.call(ctx, http.MethodGet, "com.atproto.repo.getRecord", q, "", nil, &out); err != nil {
		return Record{}, fmt.Errorf("localpds: get record %s/%s/%s: %w", did, collection, rkey, err)
	}
	return out, nil
}

// ListRecords returns one page (up to 100) of a collection's records
// (com.atproto.repo.listRecords), and the cursor of the next page, which is
// empty after the last page. Pass an empty cursor for the first page.
func (c *Client) ListRecords(ctx context.Context, did, collection, cursor string) ([]Record, string, error) {
	q := url.Values{"repo": {did}, "collection": {collection}, "limit": {"100"}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	var out struct {
		Records []Record `json:"records"`
		Cursor  string   `json:"cursor"`
	}
	if err := c.call(ctx, http.MethodGet, "com.atproto.repo.listRecords", q, "", nil, &out); err != nil {
		return nil, "", fmt.Errorf("localpds: list records %s/%s: %w", did, collection, err)
	}
	if len(out.Records) == 0 {
		out.Cursor = ""
	}
	return out.Records, out.Cursor, nil
}

// ListAllRecords returns every record of a collection, following cursors.
func (c *Client) ListAllRecords(ctx context.Context, did, collection string) ([]Record, error) {
	var all []Record
	cursor := ""
	for {
		recs, next, err := c.ListRecords(ctx, did, collection, cursor)
		if err != nil {
			return nil, err
		}
		all = append(all, recs...)
		if next == "" || next == cursor {
			return all, nil
		}
		cursor = next
	}
}

// GetLatestCommit returns the CID and rev of a repo's head commit
// (com.atproto.sync.getLatestCommit).
func (c *Client) GetLatestCommit(ctx context.Context, did string) (cid, rev string, err error) {
	var out commitMeta
	if err := c.call(ctx, http.MethodGet, "com.atproto.sync.getLatestCommit", url.Values{"did": {did}}, "", nil, &out); err != nil {
		return "", "", fmt.Errorf("localpds: get latest commit %s: %w", did, err)
	}
	return out.CID, out.Rev, nil
}

// GetRepoStatus returns a repo's hosting status (com.atproto.sync.getRepoStatus).
func (c *Client) GetRepoStatus(ctx context.Context, did string) (RepoStatus, error) {
	var out RepoStatus
	if err := c.call(ctx, http.MethodGet, "com.atproto.sync.getRepoStatus", url.Values{"did": {did}}, "", nil, &out); err != nil {
		return RepoStatus{}, fmt.Errorf("localpds: get repo status %s: %w", did, err)
	}
	return out, nil
}

// DeleteAccount deletes an account with admin auth
// (com.atproto.admin.deleteAccount). The PDS emits #account status=deleted
// and purges every earlier firehose event of the DID.
func (c *Client) DeleteAccount(ctx context.Context, adminPassword, did string) error {
	if err := c.call(ctx, http.MethodPost, "com.atproto.admin.deleteAccount", nil, basicAdmin(adminPassword),
		map[string]any{"did": did}, nil); err != nil {
		return fmt.Errorf("localpds: delete account %s: %w", did, err)
	}
	return nil
}

// Takedown applies (or, with applied false, reverses) an admin takedown of an
// account (com.atproto.admin.updateSubjectStatus with a repoRef subject). The
// PDS emits #account active=false status=takendown (or active=true).
func (c *Client) Takedown(ctx context.Context, adminPassword, did string, applied bool) error {
	takedown := map[string]any{"applied": applied}
	if applied {
		takedown["ref"] = "localpds-takedown"
	}
	in := map[string]any{
		"subject":  map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": did},
		"takedown": takedown,
	}
	if err := c.call(ctx, http.MethodPost, "com.atproto.admin.updateSubjectStatus", nil, basicAdmin(adminPassword), in, nil); err != nil {
		return fmt.Errorf("localpds: takedown %s (applied=%v): %w", did, applied, err)
	}
	return nil
}

// DeactivateAccount deactivates the session's account
// (com.atproto.server.deactivateAccount). The PDS emits #account
// active=false status=deactivated and refuses writes until ActivateAccount.
func (c *Client) DeactivateAccount(ctx context.Context, sess Session) error {
	if err := c.call(ctx, http.MethodPost, "com.atproto.server.deactivateAccount", nil, bearer(sess),
		map[string]any{}, nil); err != nil {
		return fmt.Errorf("localpds: deactivate account %s: %w", sess.DID, err)
	}
	return nil
}

// ActivateAccount re-activates the session's account
// (com.atproto.server.activateAccount). The PDS emits #account active=true,
// then #identity and #sync.
func (c *Client) ActivateAccount(ctx context.Context, sess Session) error {
	if err := c.call(ctx, http.MethodPost, "com.atproto.server.activateAccount", nil, bearer(sess), nil, nil); err != nil {
		return fmt.Errorf("localpds: activate account %s: %w", sess.DID, err)
	}
	return nil
}

func bearer(s Session) string { return "Bearer " + s.AccessJwt }

func basicAdmin(password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+password))
}

// call performs one XRPC request. in (JSON-encoded; nil means no body) and
// out (JSON-decoded if non-nil) are optional. A non-2xx response becomes an
// *XRPCError.
func (c *Client) call(ctx context.Context, method, nsid string, q url.Values, auth string, in, out any) error {
	var body []byte
	contentType := ""
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%s: encode request: %w", nsid, err)
		}
		contentType = "application/json"
	}
	resp, err := c.callRaw(ctx, method, nsid, q, auth, contentType, body)
	if err != nil {
		return err
	}
	if out == nil || len(bytes.TrimSpace(resp.body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(resp.body, out); err != nil {
		return fmt.Errorf("%s: decode response (HTTP %d, %s): %w", nsid, resp.status, strconv.Quote(tail(string(resp.body), 200)), err)
	}
	return nil
}

// rawResponse is a successful XRPC response.
type rawResponse struct {
	body        []byte
	status      int
	contentType string
}

// callRaw performs one XRPC request with a raw body (none if contentType is
// empty) and returns the raw response. A non-2xx response becomes an
// *XRPCError.
func (c *Client) callRaw(ctx context.Context, method, nsid string, q url.Values, auth, contentType string, in []byte) (rawResponse, error) {
	u := strings.TrimSuffix(c.BaseURL, "/") + "/xrpc/" + nsid
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body io.Reader
	if contentType != "" {
		body = bytes.NewReader(in)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return rawResponse{}, fmt.Errorf("%s: %w", nsid, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return rawResponse{}, fmt.Errorf("%s: %w", nsid, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return rawResponse{}, fmt.Errorf("%s: read response (HTTP %d): %w", nsid, resp.StatusCode, err)
	}
	if resp.StatusCode/100 != 2 {
		xe := &XRPCError{NSID: nsid, Status: resp.StatusCode}
		var eb struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			xe.Name, xe.Message = eb.Error, eb.Message
		} else {
			xe.Name, xe.Message = http.StatusText(resp.StatusCode), tail(strings.TrimSpace(string(b)), 500)
		}
		return rawResponse{}, xe
	}
	return rawResponse{body: b, status: resp.StatusCode, contentType: resp.Header.Get("Content-Type")}, nil
}
