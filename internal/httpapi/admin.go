package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/spaces-authz/spaces-authz/internal/redact"
)

// MaxResyncDIDs is the most repos one /v1/admin/resync request may name;
// reconcile --fix sends longer lists in chunks of this size.
const MaxResyncDIDs = 100

// ResyncTimeout bounds one /v1/admin/resync request; its response may be
// written up to writeMargin after it, past the server's WriteTimeout.
const ResyncTimeout = 2 * time.Minute

// AdminDisabledMessage is the 403 answer of a daemon without an admin
// token.
const AdminDisabledMessage = "the admin API is disabled: start the daemon with CONSUMER_ADMIN_TOKEN " +
	"or --admin-token-file to enable it"

// wwwAuthenticate is the challenge of a 401 (RFC 6750).
const wwwAuthenticate = `Bearer realm="consumer-admin"`

func (a *API) admin(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/admin/resync", a.authorized(a.resync))
	mux.HandleFunc("/v1/admin/", a.authorized(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "no such admin endpoint (there is POST /v1/admin/resync?did=...)")
	}))
}

// authorized runs next only for a request carrying the admin token.
func (a *API) authorized(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.adminHash == nil {
			a.m.admin("disabled")
			writeError(w, http.StatusForbidden, AdminDisabledMessage)
			return
		}
		tok, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			a.m.admin("unauthorized")
			w.Header().Set("WWW-Authenticate", wwwAuthenticate)
			writeError(w, http.StatusUnauthorized, "the admin API needs an Authorization: Bearer <token> header")
			return
		}
		h := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(h[:], a.adminHash) != 1 {
			a.m.admin("unauthorized")
			w.Header().Set("WWW-Authenticate", wwwAuthenticate+`, error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "wrong admin token")
			return
		}
		next(w, r)
	}
}

// bearer extracts the credential of an "Authorization: Bearer" header.
func bearer(header string) (string, bool) {
	scheme, tok, ok := strings.Cut(header, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

// resync resyncs repos from snapshots: POST /v1/admin/resync?did=A&did=B.
func (a *API) resync(w http.ResponseWriter, r *http.Request) {
	dids := r.URL.Query()["did"]
	switch {
	case len(dids) == 0:
		a.m.admin("malformed")
		writeError(w, http.StatusBadRequest, "give at least one did")
		return
	case len(dids) > MaxResyncDIDs:
		a.m.admin("too_many_dids")
		writeError(w, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("%d DIDs in one request; at most %d: split the list", len(dids), MaxResyncDIDs))
		return
	}
	for _, d := range dids {
		if _, err := syntax.ParseDID(d); err != nil {
			a.m.admin("malformed")
			writeError(w, http.StatusBadRequest, "malformed did: "+err.Error())
			return
		}
	}
	// A resync outlasts the server's WriteTimeout (sized for
	// /v1/consistency); this response may take until ResyncTimeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(ResyncTimeout + writeMargin))
	ctx, cancel := context.WithTimeout(r.Context(), ResyncTimeout)
	defer cancel()
	if err := a.src.Resync(ctx, dids); err != nil {
		a.m.admin("failed")
		writeError(w, http.StatusServiceUnavailable, redact.String(err.Error()))
		return
	}
	a.m.admin("ok")
	writeJSON(w, http.StatusOK, map[string]int{"resynced": len(dids)})
}
