package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/auth"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/golang-jwt/jwt/v5"

	"github.com/spaces-authz/spaces-authz/internal/redact"
)

// ResyncAccountNSID is the XRPC procedure an account calls to have its own
// repo resynced: POST /xrpc/org.spacesauthz.sync.resyncAccount, with a
// service-auth token of the account (aud the consumer's service DID, lxm
// this NSID) and an optional JSON body {"did": "<the token's issuer>"}.
const ResyncAccountNSID = "org.spacesauthz.sync.resyncAccount"

// ResyncAccountPath is where ResyncAccountNSID is served.
const ResyncAccountPath = "/xrpc/" + ResyncAccountNSID

// Defaults of the resyncAccount limits.
const (
	// DefaultAccountResyncEvery is how often, on average, one account may
	// resync itself.
	DefaultAccountResyncEvery = time.Minute
	// DefaultAccountResyncBurst is how many resyncs in a row one account
	// may ask for.
	DefaultAccountResyncBurst = 2
	// DefaultMaxAccountResyncs bounds the resyncAccount requests in
	// progress at once (token checks included: they may resolve a DID).
	DefaultMaxAccountResyncs = 4
	// DefaultMaxRateLimitedAccounts bounds the accounts whose bucket is
	// kept in memory.
	DefaultMaxRateLimitedAccounts = 10000
)

// ResyncAccountDisabledMessage is the 501 answer of a daemon with no
// service DID.
const ResyncAccountDisabledMessage = ResyncAccountNSID + " is not enabled on this consumer: start the daemon " +
	"with --service-did (CONSUMER_SERVICE_DID) to accept accounts' service-auth tokens"

// busyRetryAfter is the Retry-After of a request refused because
// DefaultMaxAccountResyncs were in progress.
const busyRetryAfter = 10 * time.Second

// maxResyncAccountBody bounds the JSON body ({"did": ...}).
const maxResyncAccountBody = 4 << 10

// tokenCheckTimeout bounds a token's check (resolving its issuer's DID).
const tokenCheckTimeout = 10 * time.Second

// ResyncAccountResponse is the 200 answer of resyncAccount: the repo has
// been resynced from its snapshot (the call is synchronous).
type ResyncAccountResponse struct {
	DID    string `json:"did"`
	Status string `json:"status"`
}

// xrpcError is the body of an XRPC error.
type xrpcError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// accountResync is the state of resyncAccount; nil when it is disabled.
type accountResync struct {
	validator *auth.ServiceAuthValidator
	nsid      syntax.NSID
	limits    *accountLimiter
	slots     chan struct{} // a slot per request in progress
}

func newAccountResync(cfg *Config) *accountResync {
	every, burst, n := cfg.AccountResyncEvery, cfg.AccountResyncBurst, cfg.MaxAccountResyncs
	if every == 0 {
		every = DefaultAccountResyncEvery
	}
	if burst == 0 {
		burst = DefaultAccountResyncBurst
	}
	if n == 0 {
		n = DefaultMaxAccountResyncs
	}
	return &accountResync{
		validator: &auth.ServiceAuthValidator{Audience: cfg.ServiceDID, Dir: cfg.Directory},
		nsid:      syntax.NSID(ResyncAccountNSID),
		limits:    newAccountLimiter(every, burst, DefaultMaxRateLimitedAccounts),
		slots:     make(chan struct{}, n),
	}
}

// CheckServiceDID checks a service DID (an aud): a DID with an optional
// #fragment (a service entry of its document).
func CheckServiceDID(s string) error {
	did, frag, _ := strings.Cut(s, "#")
	if _, err := syntax.ParseDID(did); err != nil {
		return err
	}
	if strings.ContainsAny(frag, "# \t") {
		return fmt.Errorf("bad fragment %q", frag)
	}
	return nil
}

// refusal is one refused request: its status, XRPC error name, message,
// metric result and, when known, the authenticated DID.
type refusal struct {
	status     int
	name, msg  string
	result     string
	did        string
	retryAfter time.Duration
}

func (a *API) refuse(w http.ResponseWriter, r *http.Request, f refusal) {
	a.m.accountResync(f.result)
	attrs := []any{"method", ResyncAccountNSID, "result", f.result, "status", f.status, "reason", f.msg,
		"remote", r.RemoteAddr}
	if f.did != "" {
		attrs = append(attrs, "did", f.did)
	}
	level := slog.LevelInfo
	if f.result == "disabled" {
		level = slog.LevelDebug // any scanner would fill the log of a daemon that never enabled it
	}
	a.log.Log(r.Context(), level, "resyncAccount refused", attrs...)
	if f.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(f.retryAfter.Seconds()))))
	}
	if f.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+ResyncAccountNSID+`"`)
	}
	writeJSON(w, f.status, xrpcError{Error: f.name, Message: f.msg})
}

// resyncAccount serves ResyncAccountNSID.
func (a *API) resyncAccount(w http.ResponseWriter, r *http.Request) {
	if a.acct == nil {
		a.refuse(w, r, refusal{status: http.StatusNotImplemented, name: "MethodNotImplemented",
			msg: ResyncAccountDisabledMessage, result: "disabled"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		a.refuse(w, r, refusal{status: http.StatusMethodNotAllowed, name: "InvalidRequest",
			msg: ResyncAccountNSID + " is a procedure: use POST", result: "malformed"})
		return
	}
	select {
	case a.acct.slots <- struct{}{}:
		defer func() { <-a.acct.slots }()
	default:
		a.refuse(w, r, refusal{status: http.StatusTooManyRequests, name: "RateLimitExceeded",
			msg: "too many account resyncs in progress; try again later", result: "busy", retryAfter: busyRetryAfter})
		return
	}
	tok, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		a.refuse(w, r, refusal{status: http.StatusUnauthorized, name: "AuthRequired",
			msg: "an Authorization: Bearer <service-auth token> header is required (com.atproto.server.getServiceAuth " +
				"with aud this consumer's service DID and lxm " + ResyncAccountNSID + ")", result: "auth_required"})
		return
	}
	bodyDID, err := readResyncAccountBody(w, r)
	if err != nil {
		a.refuse(w, r, refusal{status: http.StatusBadRequest, name: "InvalidRequest", msg: err.Error(), result: "malformed"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), tokenCheckTimeout)
	did, err := a.acct.validator.Validate(ctx, tok, &a.acct.nsid)
	cancel()
	if err != nil {
		a.refuse(w, r, tokenRefusal(err))
		return
	}
	if bodyDID != "" && bodyDID != did.String() {
		a.refuse(w, r, refusal{status: http.StatusForbidden, name: "Forbidden", did: did.String(), result: "forbidden",
			msg: "an account may resync only itself: the body names " + bodyDID + ", the token was issued by " + did.String()})
		return
	}
	if wait := a.acct.limits.take(did.String(), time.Now()); wait > 0 {
		a.refuse(w, r, refusal{status: http.StatusTooManyRequests, name: "RateLimitExceeded", did: did.String(),
			result: "rate_limited", retryAfter: wait,
			msg: fmt.Sprintf("this account resynced recently; try again in %s", wait.Round(time.Second))})
		return
	}
	// As the admin resync: it may outlast the server's WriteTimeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(ResyncTimeout + writeMargin))
	rctx, rcancel := context.WithTimeout(r.Context(), ResyncTimeout)
	defer rcancel()
	if err := a.src.Resync(rctx, []string{did.String()}); err != nil {
		a.refuse(w, r, refusal{status: http.StatusServiceUnavailable, name: "ResyncFailed", did: did.String(),
			result: "failed", msg: "resync failed: " + redact.String(err.Error())})
		return
	}
	a.m.accountResync("ok")
	a.log.Info("account resynced on its request", "method", ResyncAccountNSID, "did", did.String())
	writeJSON(w, http.StatusOK, ResyncAccountResponse{DID: did.String(), Status: "resynced"})
}

// readResyncAccountBody returns the DID of the optional JSON body ("" when
// there is none).
func readResyncAccountBody(w http.ResponseWriter, r *http.Request) (string, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxResyncAccountBody))
	if err != nil {
		return "", fmt.Errorf("body: %w", err)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return "", nil
	}
	var in struct {
		DID *string `json:"did"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return "", fmt.Errorf("body: want a JSON object {\"did\": \"...\"} or nothing: %w", err)
	}
	if in.DID == nil {
		return "", nil
	}
	d, err := syntax.ParseDID(*in.DID)
	if err != nil {
		return "", fmt.Errorf("body: malformed did: %w", err)
	}
	return d.String(), nil
}

// tokenRefusal says why a service-auth token was refused.
func tokenRefusal(err error) refusal {
	f := refusal{status: http.StatusUnauthorized, name: "InvalidToken", result: "invalid_token"}
	switch {
	case errors.Is(err, identity.ErrDIDResolutionFailed) || errors.Is(err, context.DeadlineExceeded):
		// The issuer's DID document could not be fetched: not the token's
		// fault, so not a 401.
		return refusal{status: http.StatusServiceUnavailable, name: "IdentityUnavailable", result: "identity_unavailable",
			msg: "the token's issuer could not be resolved; try again later: " + redact.String(err.Error())}
	case errors.Is(err, jwt.ErrTokenExpired):
		f.msg = "the token has expired"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		f.msg = "the token is for another service (aud is not this consumer's service DID)"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		f.msg = "the token's signature does not match its issuer's key"
	case errors.Is(err, identity.ErrDIDNotFound):
		f.msg = "the token's issuer has no DID document"
	case errors.Is(err, jwt.ErrTokenInvalidClaims) && strings.Contains(err.Error(), "LXM"):
		f.msg = "the token is for another method (lxm is not " + ResyncAccountNSID + ")"
	default:
		f.msg = "invalid service-auth token: " + redact.String(err.Error())
	}
	return f
}
