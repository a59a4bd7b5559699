package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/redact"
)

// adminTokenEnv holds the admin API's bearer token (or --admin-token-file).
const adminTokenEnv = EnvPrefix + "ADMIN_TOKEN"

// adminFlags say where the admin API listens (the daemon) or is reached
// (reconcile --fix), and where its token comes from: CONSUMER_ADMIN_TOKEN
// or --admin-token-file, never a plain flag.
type adminFlags struct {
	addr, tokenFile string
}

func (a *adminFlags) register(fs *flag.FlagSet, addrUsage string) {
	fs.StringVar(&a.addr, "admin-addr", "", addrUsage)
	fs.StringVar(&a.tokenFile, "admin-token-file", "",
		"file holding the admin API's bearer token (or set "+adminTokenEnv+"); without one the daemon's admin API is off")
}

// token is the admin token, "" when none is configured.
func (a *adminFlags) token() (string, error) {
	return secret("admin-token-file", a.tokenFile, adminTokenEnv)
}

// errNoDaemon means no daemon answered: reconcile --fix then resyncs under
// the lease itself.
var errNoDaemon = errors.New("no daemon answers")

// resyncThroughDaemon asks the daemon at base (host:port or a URL) to
// resync dids, MaxResyncDIDs at a time, with the admin token when one is
// configured. It returns an error wrapping errNoDaemon when the first
// request finds no daemon, and a clear error when the daemon refuses.
func resyncThroughDaemon(ctx context.Context, base, token string, dids []string) error {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	client := &http.Client{Timeout: httpapi.ResyncTimeout + time.Minute}
	for start := 0; start < len(dids); start += httpapi.MaxResyncDIDs {
		chunk := dids[start:min(start+httpapi.MaxResyncDIDs, len(dids))]
		req, err := http.NewRequestWithContext(ctx, http.MethodPost,
			base+"/v1/admin/resync?"+url.Values{"did": chunk}.Encode(), nil)
		if err != nil {
			return redact.Error(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			if start == 0 {
				return fmt.Errorf("%w at %s: %w", errNoDaemon, redact.URL(base), redact.Error(err))
			}
			return fmt.Errorf("resync through the daemon at %s: %w", redact.URL(base), redact.Error(err))
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		msg := strings.TrimSpace(string(b))
		switch {
		case resp.StatusCode == http.StatusOK:
			continue
		case resp.StatusCode == http.StatusUnauthorized && token == "":
			return fmt.Errorf("the daemon's admin API wants its token (HTTP 401): set %s or --admin-token-file "+
				"to the token the daemon was started with", adminTokenEnv)
		case resp.StatusCode == http.StatusUnauthorized:
			return fmt.Errorf("the daemon refused the admin token (HTTP 401): %s or --admin-token-file must hold "+
				"the token the daemon was started with", adminTokenEnv)
		case resp.StatusCode == http.StatusForbidden:
			return fmt.Errorf("the daemon's admin API is disabled (HTTP 403): restart it with %s or "+
				"--admin-token-file, and give reconcile the same token", adminTokenEnv)
		default:
			return fmt.Errorf("the daemon refused the resync: HTTP %d: %s", resp.StatusCode, redact.String(msg))
		}
	}
	return nil
}
