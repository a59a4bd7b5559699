package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/spaces-authz/spaces-authz/firehose"
)

// identityDir resolves accounts' DID documents (PLC and did:web) through
// indigo's identity package, in a bounded cache.
type identityDir struct {
	dir identity.Directory
}

func newIdentity(plcURL string) *identityDir {
	base := &identity.BaseDirectory{PLCURL: plcURL, HTTPClient: http.Client{Timeout: 10 * time.Second},
		TryAuthoritativeDNS: true, SkipDNSDomainSuffixes: []string{".bsky.social"}}
	return &identityDir{dir: identity.NewCacheDirectory(base, 100_000, 24*time.Hour, 2*time.Minute, 5*time.Minute)}
}

func (d *identityDir) PDSEndpoint(ctx context.Context, did string) (string, error) {
	p, err := syntax.ParseDID(did)
	if err != nil {
		return "", err
	}
	id, err := d.dir.LookupDID(ctx, p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", did, err)
	}
	ep := id.PDSEndpoint()
	if ep == "" {
		return "", fmt.Errorf("%w: %s", firehose.ErrNoPDS, did)
	}
	return ep, nil
}

func (d *identityDir) Forget(ctx context.Context, did string) {
	if p, err := syntax.ParseDID(did); err == nil {
		_ = d.dir.Purge(ctx, p.AtIdentifier())
	}
}
