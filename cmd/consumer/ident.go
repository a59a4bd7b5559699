package main

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/redact"
)

// DefaultPLCURL is the PLC directory of the ATProto network.
const DefaultPLCURL = "https://plc.directory"

// Sizes of the identity cache: DID documents are kept an hour (a key
// rotation is seen at once anyway: a signature that does not verify
// purges the issuer's entry and resolves it again), failures a minute.
const (
	identityCacheSize = 10000
	identityHitTTL    = time.Hour
	identityErrTTL    = time.Minute
	identityTimeout   = 10 * time.Second
)

// newDirectory is the identity directory that verifies accounts'
// service-auth tokens: did:plc from plcURL, did:web from the web, cached.
// Handles are not verified: a token names a DID, and its key is all that
// matters. This is the one place the directory is built, so that a richer
// resolver can replace it.
func newDirectory(plcURL string) identity.Directory {
	base := &identity.BaseDirectory{
		PLCURL:                 strings.TrimRight(plcURL, "/"),
		HTTPClient:             http.Client{Timeout: identityTimeout},
		SkipHandleVerification: true,
		UserAgent:              "spaces-authz-consumer/" + version,
	}
	return identity.NewCacheDirectory(base, identityCacheSize, identityHitTTL, identityErrTTL, identityErrTTL)
}

// checkServiceDID checks --service-did.
func checkServiceDID(did string) error {
	if err := httpapi.CheckServiceDID(did); err != nil {
		return usageError(fmt.Errorf("--service-did %q: want a DID, e.g. did:web:authz.example.com: %w", did, err))
	}
	return nil
}

// accountResyncState says where accounts may resync themselves, for the
// start-up line.
func accountResyncState(f runFlags) string {
	if f.serviceDID == "" {
		return "disabled (set --service-did)"
	}
	return "aud " + f.serviceDID + ", PLC " + redact.URL(f.plcURL)
}
