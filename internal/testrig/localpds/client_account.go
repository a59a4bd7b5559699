package localpds

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The XRPC calls of account migration and self-service account deletion.

// SessionInfo is the result of com.atproto.server.getSession.
type SessionInfo struct {
	DID    string `json:"did"`
	Handle string `json:"handle"`
	Email  string `json:"email"`
	// Active is false for a deactivated (or taken-down) account, with the
	// reason in Status.
	Active bool   `json:"active"`
	Status string `json:"status,omitempty"`
}

// AccountStatus is the result of com.atproto.server.checkAccountStatus: what
// a migration tool checks on the new PDS before and after it activates the
// account.
type AccountStatus struct {
	Activated bool `json:"activated"`
	// ValidDID is true when the DID document points at this PDS with this
	// PDS's signing key (the condition activateAccount enforces).
	ValidDID       bool   `json:"validDid"`
	RepoCommit     string `json:"repoCommit"`
	RepoRev        string `json:"repoRev"`
	RepoBlocks     int    `json:"repoBlocks"`
	IndexedRecords int    `json:"indexedRecords"`
	ExpectedBlobs  int    `json:"expectedBlobs"`
	ImportedBlobs  int    `json:"importedBlobs"`
}

// DIDCredentials are the PLC fields a PDS wants in a DID it hosts
// (com.atproto.identity.getRecommendedDidCredentials), and the input of
// SignPLCOperation.
type DIDCredentials struct {
	RotationKeys        []string              `json:"rotationKeys,omitempty"`
	AlsoKnownAs         []string              `json:"alsoKnownAs,omitempty"`
	VerificationMethods map[string]string     `json:"verificationMethods,omitempty"`
	Services            map[string]PLCService `json:"services,omitempty"`
}

// BlobRef is a blob a record refers to, as listed by listMissingBlobs.
type BlobRef struct {
	CID       string `json:"cid"`
	RecordURI string `json:"recordUri"`
}

// GetSession returns the account of a session (com.atproto.server.getSession),
// with its email address.
func (c *Client) GetSession(ctx context.Context, sess Session) (SessionInfo, error) {
	var out SessionInfo
	if err := c.call(ctx, http.MethodGet, "com.atproto.server.getSession", nil, bearer(sess), nil, &out); err != nil {
		return SessionInfo{}, fmt.Errorf("localpds: get session %s: %w", sess.DID, err)
	}
	return out, nil
}

// GetServiceAuth mints a service-auth JWT signed with the account's repo
// signing key (com.atproto.server.getServiceAuth) for the service aud (a
// service DID, e.g. another PDS's ServiceDID) and the method lxm (empty: any
// method, valid one minute).
func (c *Client) GetServiceAuth(ctx context.Context, sess Session, aud, lxm string) (string, error) {
	return c.GetServiceAuthUntil(ctx, sess, aud, lxm, time.Time{})
}

// GetServiceAuthUntil is GetServiceAuth with the token's expiry exp (the
// PDS wants it in the future, at most an hour on, a minute without lxm;
// whole seconds); the zero time leaves it to the PDS.
func (c *Client) GetServiceAuthUntil(ctx context.Context, sess Session, aud, lxm string, exp time.Time) (string, error) {
	q := url.Values{"aud": {aud}}
	if !exp.IsZero() {
		q.Set("exp", strconv.FormatInt(exp.Unix(), 10))
	}
	if lxm != "" {
		q.Set("lxm", lxm)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := c.call(ctx, http.MethodGet, "com.atproto.server.getServiceAuth", q, bearer(sess), nil, &out); err != nil {
		return "", fmt.Errorf("localpds: get service auth %s for %s %s: %w", sess.DID, aud, lxm, err)
	}
	return out.Token, nil
}

// CreateAccountForDID creates an account for an existing DID
// (com.atproto.server.createAccount with "did"), authenticated by a
// service-auth token from the account's current PDS (GetServiceAuth with
// this PDS's service DID and lxm com.atproto.server.createAccount). The
// account starts deactivated, with an empty repo and a new signing key, and
// no firehose event; ActivateAccount requires the DID document to point here
// first.
func (c *Client) CreateAccountForDID(ctx context.Context, did, handle, email, password, serviceAuth string) (Session, error) {
	var s Session
	in := map[string]any{"did": did, "handle": handle, "email": email, "password": password}
	if err := c.call(ctx, http.MethodPost, "com.atproto.server.createAccount", nil, "Bearer "+serviceAuth, in, &s); err != nil {
		return Session{}, fmt.Errorf("localpds: create account %s for %s: %w", handle, did, err)
	}
	return s, nil
}

// CheckAccountStatus returns the hosting state of the session's account on
// this PDS (com.atproto.server.checkAccountStatus).
func (c *Client) CheckAccountStatus(ctx context.Context, sess Session) (AccountStatus, error) {
	var out AccountStatus
	if err := c.call(ctx, http.MethodGet, "com.atproto.server.checkAccountStatus", nil, bearer(sess), nil, &out); err != nil {
		return AccountStatus{}, fmt.Errorf("localpds: check account status %s: %w", sess.DID, err)
	}
	return out, nil
}

// GetRepo exports a whole repo as a CAR file (com.atproto.sync.getRepo).
func (c *Client) GetRepo(ctx context.Context, did string) ([]byte, error) {
	resp, err := c.callRaw(ctx, http.MethodGet, "com.atproto.sync.getRepo", url.Values{"did": {did}}, "", "", nil)
	if err != nil {
		return nil, fmt.Errorf("localpds: get repo %s: %w", did, err)
	}
	return resp.body, nil
}

// ImportRepo replaces the session's repo with the one in car
// (com.atproto.repo.importRepo, e.g. a GetRepo export). The reference PDS
// emits no firehose event for it.
func (c *Client) ImportRepo(ctx context.Context, sess Session, car []byte) error {
	if _, err := c.callRaw(ctx, http.MethodPost, "com.atproto.repo.importRepo", nil, bearer(sess), "application/vnd.ipld.car", car); err != nil {
		return fmt.Errorf("localpds: import repo %s (%d bytes): %w", sess.DID, len(car), err)
	}
	return nil
}

// ListMissingBlobs returns the blobs the session's records refer to that
// this PDS does not have (com.atproto.repo.listMissingBlobs), all pages.
func (c *Client) ListMissingBlobs(ctx context.Context, sess Session) ([]BlobRef, error) {
	var all []BlobRef
	cursor := ""
	for {
		q := url.Values{"limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var out struct {
			Cursor string    `json:"cursor"`
			Blobs  []BlobRef `json:"blobs"`
		}
		if err := c.call(ctx, http.MethodGet, "com.atproto.repo.listMissingBlobs", q, bearer(sess), nil, &out); err != nil {
			return nil, fmt.Errorf("localpds: list missing blobs %s: %w", sess.DID, err)
		}
		all = append(all, out.Blobs...)
		if out.Cursor == "" || len(out.Blobs) == 0 || out.Cursor == cursor {
			return all, nil
		}
		cursor = out.Cursor
	}
}

// GetBlob downloads a blob (com.atproto.sync.getBlob) and its MIME type.
func (c *Client) GetBlob(ctx context.Context, did, cid string) ([]byte, string, error) {
	resp, err := c.callRaw(ctx, http.MethodGet, "com.atproto.sync.getBlob", url.Values{"did": {did}, "cid": {cid}}, "", "", nil)
	if err != nil {
		return nil, "", fmt.Errorf("localpds: get blob %s %s: %w", did, cid, err)
	}
	return resp.body, resp.contentType, nil
}

// UploadBlob uploads a blob (com.atproto.repo.uploadBlob) and returns its
// blob ref ({"$type":"blob","ref":{"$link":CID},"mimeType":...,"size":N}),
// to put in a record.
func (c *Client) UploadBlob(ctx context.Context, sess Session, mimeType string, data []byte) (map[string]any, error) {
	resp, err := c.callRaw(ctx, http.MethodPost, "com.atproto.repo.uploadBlob", nil, bearer(sess), mimeType, data)
	if err != nil {
		return nil, fmt.Errorf("localpds: upload blob (%d bytes): %w", len(data), err)
	}
	var out struct {
		Blob map[string]any `json:"blob"`
	}
	if err := json.Unmarshal(resp.body, &out); err != nil {
		return nil, fmt.Errorf("localpds: upload blob: bad response %q: %w", tail(string(resp.body), 200), err)
	}
	if out.Blob == nil {
		return nil, fmt.Errorf("localpds: upload blob: no blob in response %q", tail(string(resp.body), 200))
	}
	return out.Blob, nil
}

// GetRecommendedDIDCredentials returns the PLC fields this PDS wants in the
// session's DID (com.atproto.identity.getRecommendedDidCredentials): its
// rotation keys, the account's signing key here, the handle and this PDS's
// public URL.
func (c *Client) GetRecommendedDIDCredentials(ctx context.Context, sess Session) (DIDCredentials, error) {
	var out DIDCredentials
	if err := c.call(ctx, http.MethodGet, "com.atproto.identity.getRecommendedDidCredentials", nil, bearer(sess), nil, &out); err != nil {
		return DIDCredentials{}, fmt.Errorf("localpds: get recommended did credentials %s: %w", sess.DID, err)
	}
	return out, nil
}

// RequestPLCOperationSignature makes the PDS mail the account an email token
// for SignPLCOperation (com.atproto.identity.requestPlcOperationSignature);
// read it with PDS.EmailToken(email, MailPLCOperation).
func (c *Client) RequestPLCOperationSignature(ctx context.Context, sess Session) error {
	if err := c.call(ctx, http.MethodPost, "com.atproto.identity.requestPlcOperationSignature", nil, bearer(sess), nil, nil); err != nil {
		return fmt.Errorf("localpds: request plc operation signature %s: %w", sess.DID, err)
	}
	return nil
}

// SignPLCOperation has the PDS sign, with its PLC rotation key, an update of
// the session's DID to creds (com.atproto.identity.signPlcOperation) and
// returns the signed operation, unsubmitted. token is the email token from
// RequestPLCOperationSignature; it is used up.
func (c *Client) SignPLCOperation(ctx context.Context, sess Session, token string, creds DIDCredentials) (json.RawMessage, error) {
	in := map[string]any{"token": token}
	if creds.RotationKeys != nil {
		in["rotationKeys"] = creds.RotationKeys
	}
	if creds.AlsoKnownAs != nil {
		in["alsoKnownAs"] = creds.AlsoKnownAs
	}
	if creds.VerificationMethods != nil {
		in["verificationMethods"] = creds.VerificationMethods
	}
	if creds.Services != nil {
		in["services"] = creds.Services
	}
	var out struct {
		Operation json.RawMessage `json:"operation"`
	}
	if err := c.call(ctx, http.MethodPost, "com.atproto.identity.signPlcOperation", nil, bearer(sess), in, &out); err != nil {
		return nil, fmt.Errorf("localpds: sign plc operation %s: %w", sess.DID, err)
	}
	return out.Operation, nil
}

// SubmitPLCOperation sends a signed PLC operation for the session's DID to
// the PLC directory through this PDS (com.atproto.identity.submitPlcOperation),
// which checks that the operation makes the DID point at itself with its
// rotation and signing keys. The PDS emits #identity, even for a
// deactivated account.
func (c *Client) SubmitPLCOperation(ctx context.Context, sess Session, op json.RawMessage) error {
	in := map[string]any{"operation": op}
	if err := c.call(ctx, http.MethodPost, "com.atproto.identity.submitPlcOperation", nil, bearer(sess), in, nil); err != nil {
		return fmt.Errorf("localpds: submit plc operation %s: %w", sess.DID, err)
	}
	return nil
}

// RequestAccountDelete makes the PDS mail the account an email token for
// DeleteAccountWithToken (com.atproto.server.requestAccountDelete); read it
// with PDS.EmailToken(email, MailDeleteAccount).
func (c *Client) RequestAccountDelete(ctx context.Context, sess Session) error {
	if err := c.call(ctx, http.MethodPost, "com.atproto.server.requestAccountDelete", nil, bearer(sess), nil, nil); err != nil {
		return fmt.Errorf("localpds: request account delete %s: %w", sess.DID, err)
	}
	return nil
}

// DeleteAccountWithToken deletes an account the way its owner does
// (com.atproto.server.deleteAccount: DID, password and the email token from
// RequestAccountDelete). Like the admin DeleteAccount, the PDS emits
// #account status=deleted and purges the DID's earlier firehose events.
func (c *Client) DeleteAccountWithToken(ctx context.Context, did, password, token string) error {
	in := map[string]any{"did": did, "password": password, "token": token}
	if err := c.call(ctx, http.MethodPost, "com.atproto.server.deleteAccount", nil, "", in, nil); err != nil {
		return fmt.Errorf("localpds: delete account %s with token: %w", did, err)
	}
	return nil
}
