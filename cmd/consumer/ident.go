package main

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/ident"
	"github.com/spaces-authz/spaces-authz/internal/redact"
)

// DefaultPLCURL is the PLC directory of the ATProto network.
const DefaultPLCURL = "https://plc.directory"

// identity is the process's one identity directory (did:plc from
// --plc-url, did:web from the web, in a bounded cache): accounts' PDSes
// behind a relay, their keys for verified commits and service-auth
// tokens. Its metrics go to reg (nil: none).
func (c *common) identity(reg prometheus.Registerer) (*ident.Directory, error) {
	if c.dir != nil {
		return c.dir, nil
	}
	d, err := ident.New(ident.Config{PLCURL: strings.TrimRight(c.plcURL, "/"), Registerer: reg,
		AllowPrivate: c.allowPrivatePDS})
	if err != nil {
		return nil, usageError(fmt.Errorf("--plc-url: %w", err))
	}
	c.dir = d
	return d, nil
}

// verifying says whether commits are verified: --verify-commits, or by
// default when the stream is a relay's (an intermediary), not a PDS's (the
// authority for its own repos).
func (f *runFlags) verifying() bool {
	switch f.verifyCommits {
	case "on":
		return true
	case "off":
		return false
	}
	return f.relayURL != ""
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
