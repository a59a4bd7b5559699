package localpds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
)

// plcDir is a running in-memory PLC directory (plc.mjs) and the PDSs that use
// it. The first PDS starts it; more join it through Options.SharePLC. It stops
// when the last PDS using it stops, whatever the order, because every DID
// document (and so every account on every PDS) lives only in its memory.
type plcDir struct {
	// url is http://localhost:PORT.
	url string
	// root is a temporary directory that holds the temporary data dirs of
	// the PDSs on this PLC. plc.mjs removes it when it exits (PLC_CLEANUP_DIR),
	// even when this process is killed, because it outlives PDS restarts.
	root string

	mu    sync.Mutex
	proc  *proc
	users int  // running PDSs (Stop not called yet) on this PLC
	done  bool // stopped: no PDS may join any more
}

// newPLCDir makes the root directory of a PLC that is not started yet.
func newPLCDir() (*plcDir, error) {
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm" // tmpfs: no fsync stalls on a busy machine
	}
	root, err := os.MkdirTemp(base, "localpds-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	port, err := freePort()
	if err != nil {
		_ = os.RemoveAll(root)
		return nil, err
	}
	return &plcDir{url: "http://localhost:" + strconv.Itoa(port), root: root, users: 1}, nil
}

// start runs plc.mjs on the port of d.url.
func (d *plcDir) start(ctx context.Context, dir string, stderr io.Writer) error {
	env := []string{
		"PLC_PORT=" + strings.TrimPrefix(d.url, "http://localhost:"),
		"PLC_CLEANUP_DIR=" + d.root,
	}
	proc, r, err := startNode(ctx, dir, "plc.mjs", "plc", env, stderr)
	d.mu.Lock()
	d.proc = proc
	d.mu.Unlock()
	if err == nil && r.PLC != d.url {
		err = fmt.Errorf("PLC listens on %s, want %s", r.PLC, d.url)
	}
	return err
}

// join registers one more PDS on the PLC.
func (d *plcDir) join() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return fmt.Errorf("the PLC %s has stopped (every PDS on it was stopped)", d.url)
	}
	d.users++
	return nil
}

// leave unregisters a PDS; the last one to leave stops the PLC and removes
// the root directory.
func (d *plcDir) leave() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.users--; d.users > 0 {
		return nil
	}
	d.done = true
	var errs []error
	if d.proc != nil {
		errs = append(errs, d.proc.stop(stopGrace))
	}
	errs = append(errs, os.RemoveAll(d.root))
	return errors.Join(errs...)
}

// PLCData is a DID's current state in the PLC directory
// (GET /:did/data): the fields a PLC operation sets.
type PLCData struct {
	DID string `json:"did"`
	// RotationKeys are did:key strings, highest priority first.
	RotationKeys []string `json:"rotationKeys"`
	// VerificationMethods maps an ID to a did:key; "atproto" is the repo
	// signing key.
	VerificationMethods map[string]string `json:"verificationMethods"`
	// AlsoKnownAs holds at://handle URIs.
	AlsoKnownAs []string              `json:"alsoKnownAs"`
	Services    map[string]PLCService `json:"services"`
}

// PLCService is a service entry of PLCData.
type PLCService struct {
	Type     string `json:"type"`
	Endpoint string `json:"endpoint"`
}

// PDSEndpoint returns the atproto_pds service endpoint, which is the public
// URL of the PDS that hosts the account (PDS.PublicURL).
func (d PLCData) PDSEndpoint() string { return d.Services["atproto_pds"].Endpoint }

// SigningKey returns the repo signing key (did:key) that commits must be
// signed with.
func (d PLCData) SigningKey() string { return d.VerificationMethods["atproto"] }

// DIDDocument is a DID document as the PLC directory serves it (GET /:did).
type DIDDocument struct {
	ID                 string   `json:"id"`
	AlsoKnownAs        []string `json:"alsoKnownAs"`
	VerificationMethod []struct {
		ID                 string `json:"id"`
		Type               string `json:"type"`
		Controller         string `json:"controller"`
		PublicKeyMultibase string `json:"publicKeyMultibase"`
	} `json:"verificationMethod"`
	Service []struct {
		ID              string `json:"id"`
		Type            string `json:"type"`
		ServiceEndpoint string `json:"serviceEndpoint"`
	} `json:"service"`
}

// PDSEndpoint returns the endpoint of the #atproto_pds service.
func (d DIDDocument) PDSEndpoint() string {
	for _, s := range d.Service {
		if s.ID == "#atproto_pds" || s.ID == d.ID+"#atproto_pds" {
			return s.ServiceEndpoint
		}
	}
	return ""
}

// ResolveDID fetches a DID document from the PLC directory of p.
func (p *PDS) ResolveDID(ctx context.Context, did string) (DIDDocument, error) {
	var doc DIDDocument
	if err := p.plcGet(ctx, "/"+did, &doc); err != nil {
		return DIDDocument{}, fmt.Errorf("localpds: resolve %s: %w", did, err)
	}
	return doc, nil
}

// PLCData fetches a DID's current PLC data (keys, handle, services) from the
// PLC directory of p.
func (p *PDS) PLCData(ctx context.Context, did string) (PLCData, error) {
	var d PLCData
	if err := p.plcGet(ctx, "/"+did+"/data", &d); err != nil {
		return PLCData{}, fmt.Errorf("localpds: plc data of %s: %w", did, err)
	}
	return d, nil
}

// PLCAuditLog fetches every operation of a DID (GET /:did/log/audit), oldest
// first, as raw JSON objects.
func (p *PDS) PLCAuditLog(ctx context.Context, did string) ([]json.RawMessage, error) {
	var log []json.RawMessage
	if err := p.plcGet(ctx, "/"+did+"/log/audit", &log); err != nil {
		return nil, fmt.Errorf("localpds: plc audit log of %s: %w", did, err)
	}
	return log, nil
}

func (p *PDS) plcGet(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.PLCURL+path, nil)
	if err != nil {
		return err
	}
	resp, err := defaultHTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d: %s", p.PLCURL+path, resp.StatusCode, tail(strings.TrimSpace(string(b)), 300))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("GET %s: %w", p.PLCURL+path, err)
	}
	return nil
}
