package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spaces-authz/spaces-authz/projector"
	"github.com/spaces-authz/spaces-authz/spice"
)

// Every command checks all of its configuration right after parsing its
// flags, before it dials SpiceDB, NATS or the PDS and before it takes the
// lease: a mistake is reported at once with exit code 2, and never leaves
// a lease behind for the corrected restart to wait out.

// validate checks the common flags without contacting anything. needPDS
// makes --pds-url required.
func (c *common) validate(needPDS bool) error {
	if needPDS {
		if err := c.needPDS(); err != nil {
			return err
		}
	}
	if n := len(c.pdsURLs()); n > 1 && !c.severalPDS {
		return usageError(fmt.Errorf("--pds-url names %d PDSes: this command takes one; a daemon that follows several "+
			"names each source <name>-<host> (pass that as --name with its one --pds-url)", n))
	}
	for _, u := range c.pdsURLs() {
		if err := checkURL("pds-url", u, "http", "https", "ws", "wss"); err != nil {
			return err
		}
	}
	if c.relayURL != "" {
		if err := checkURL("relay-url", c.relayURL, "http", "https", "ws", "wss"); err != nil {
			return err
		}
	}
	if err := checkURL("plc-url", c.plcURL, "http", "https"); err != nil {
		return err
	}
	if !spice.ValidName(c.name) {
		return usageError(fmt.Errorf("--name %q: a projector name is 1 to 128 letters, digits, _ or -", c.name))
	}
	if _, err := c.logger(); err != nil {
		return err
	}
	if _, err := c.rules(); err != nil {
		return err
	}
	_, err := c.spiceConfig()
	return err
}

// checkURL checks that raw parses as a URL with one of schemes and a host.
func checkURL(flagName, raw string, schemes ...string) error {
	want := "want " + strings.Join(schemes, "://, ") + ":// and a host"
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return usageError(fmt.Errorf("--%s %q is not a URL (%w): %s", flagName, raw, err, want))
	}
	if u.Scheme == "" {
		return usageError(fmt.Errorf("--%s %q has no scheme: %s", flagName, raw, want))
	}
	if !slices.Contains(schemes, strings.ToLower(u.Scheme)) {
		return usageError(fmt.Errorf("--%s %q: scheme %q: %s", flagName, raw, u.Scheme, want))
	}
	if u.Hostname() == "" {
		return usageError(fmt.Errorf("--%s %q has no host: %s", flagName, raw, want))
	}
	return nil
}

// checkFile checks that a file a flag names can be read.
func checkFile(flagName, path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return usageError(fmt.Errorf("--%s: %w", flagName, err))
	}
	_ = f.Close()
	return nil
}

// checkCA checks that a CA bundle flag names a readable PEM bundle.
func checkCA(flagName, path string) error {
	if path == "" {
		return nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return usageError(fmt.Errorf("--%s: %w", flagName, err))
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return usageError(fmt.Errorf("--%s %s holds no PEM certificate", flagName, path))
	}
	return nil
}

// checkAddr checks a listen address (host:port, port may be 0).
func checkAddr(flagName, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return usageError(fmt.Errorf("--%s %q: want host:port, e.g. 127.0.0.1:9464 (%w)", flagName, addr, err))
	}
	return nil
}

// durations checks duration flags: those in positive must be above 0, the
// others not below.
func durations(positive, nonNegative map[string]time.Duration) error {
	for _, name := range sortedKeys(positive) {
		if d := positive[name]; d <= 0 {
			return usageError(fmt.Errorf("--%s %s: want a positive duration, e.g. 5s or 2m", name, d))
		}
	}
	for _, name := range sortedKeys(nonNegative) {
		if d := nonNegative[name]; d < 0 {
			return usageError(fmt.Errorf("--%s %s: want 0 (off) or a positive duration, e.g. 5s or 2m", name, d))
		}
	}
	return nil
}

// nonNegative checks number flags (0 takes the default where one applies).
func nonNegative(flags map[string]float64) error {
	for _, name := range sortedKeys(flags) {
		if v := flags[name]; v < 0 {
			return usageError(fmt.Errorf("--%s %v: want 0 or more", name, v))
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// validate checks the daemon's flags (run, rebuild).
func (f *runFlags) validate() error {
	f.severalPDS = true
	if err := f.common.validate(true); err != nil {
		return err
	}
	if err := durations(map[string]time.Duration{"lease-timeout": f.leaseTimeout, "heartbeat-every": f.heartbeatEvery,
		"flush-every": f.flushEvery, "nats-max-age": f.natsMaxAge, "account-resync-every": f.accountResyncEvery},
		map[string]time.Duration{"rev-flush-after": f.revFlushAfter, "reconcile-every": f.reconcileEvery}); err != nil {
		return err
	}
	if f.heartbeatEvery >= f.leaseTimeout {
		return usageError(fmt.Errorf("--heartbeat-every %s must be shorter than --lease-timeout %s: the holder would "+
			"look dead between its heartbeats", f.heartbeatEvery, f.leaseTimeout))
	}
	if err := nonNegative(map[string]float64{"max-consistency-waiters": float64(f.maxConsistencyWaiters),
		"workers": float64(f.workers), "queue-depth": float64(f.queueDepth), "max-in-flight": float64(f.maxInFlight),
		"max-in-flight-bytes": float64(f.maxInFlightBytes), "max-frame-bytes": float64(f.maxFrame),
		"max-repo-bytes": float64(f.maxRepoBytes), "max-repo-records": float64(f.maxRepoRecords),
		"batch-updates": float64(f.batchUpdates), "cache-repos": float64(f.cacheRepos),
		"cache-records": float64(f.cacheRecords), "held-per-repo": float64(f.heldPerRepo),
		"resync-concurrency": float64(f.resyncConcurrency), "resync-rate": f.resyncRate,
		"repo-host-concurrency": float64(f.hostConcurrency), "repo-host-rate": f.hostRate,
		"account-resync-burst": float64(f.accountResyncBurst), "max-account-resyncs": float64(f.maxAccountResyncs)}); err != nil {
		return err
	}
	switch f.verifyCommits {
	case "auto", "on", "off":
	default:
		return usageError(fmt.Errorf("--verify-commits %q: want on, off or auto", f.verifyCommits))
	}
	if f.collectionDir != "" {
		if err := checkURL("collection-dir", f.collectionDir, "http", "https"); err != nil {
			return err
		}
	}
	if f.relayURL == "" && f.collectionDir != "" {
		return usageError(errors.New("--collection-dir applies to --relay-url only (a PDS lists its own repos)"))
	}
	if f.serviceDID != "" {
		if err := checkServiceDID(f.serviceDID); err != nil {
			return err
		}
	}
	if f.batchUpdates > projector.MaxBatchUpdates {
		return usageError(fmt.Errorf("--batch-updates %d: at most %d (SpiceDB's 1,000 a write, less the heartbeat and the "+
			"progress step)", f.batchUpdates, projector.MaxBatchUpdates))
	}
	if err := checkAddr("http-addr", f.httpAddr); err != nil {
		return err
	}
	if f.admin.addr != "" {
		if err := checkAddr("admin-addr", f.admin.addr); err != nil {
			return err
		}
		if _, port, _ := net.SplitHostPort(f.admin.addr); f.admin.addr == f.httpAddr && port != "0" {
			return usageError(fmt.Errorf("--admin-addr %s is --http-addr too: give the admin API an address of its "+
				"own (e.g. 127.0.0.1:9465), or leave --admin-addr empty to serve it on --http-addr", f.admin.addr))
		}
	}
	if _, err := f.admin.token(); err != nil {
		return err
	}
	return f.nats.validate()
}

// validate checks the NATS flags (when the fan-out is on).
func (n *natsFlags) validate() error {
	if n.url == "" {
		return nil
	}
	for _, u := range strings.Split(n.url, ",") {
		if u = strings.TrimSpace(u); !strings.Contains(u, "://") {
			u = "nats://" + u // what nats.go assumes
		}
		if err := checkURL("nats-url", u, "nats", "tls", "ws", "wss"); err != nil {
			return err
		}
	}
	for _, f := range []struct{ name, path string }{{"nats-creds", n.creds}, {"nats-cert", n.cert}, {"nats-key", n.key}} {
		if err := checkFile(f.name, f.path); err != nil {
			return err
		}
	}
	if (n.cert == "") != (n.key == "") {
		return usageError(errors.New("--nats-cert and --nats-key go together"))
	}
	return checkCA("nats-ca", n.ca)
}

// spiceInsecure is the --spicedb-insecure of the command running (set
// when its SpiceDB configuration is built): dispatch explains a transport
// error with it.
var spiceInsecure bool

// checkProjector fails, listing the projectors that exist, when SpiceDB
// holds nothing of projector name: a typo in --name must not read as an
// empty projector (lag 0), nor create one (a tool taking its lease).
func (c *common) checkProjector(ctx context.Context, client *spice.Client) error {
	names, err := client.Projectors(ctx)
	if err != nil {
		return err
	}
	if slices.Contains(names, c.name) {
		return nil
	}
	if len(names) == 0 {
		return usageError(fmt.Errorf("--name %s: SpiceDB at %s holds no projector yet; `consumer run` creates one "+
			"on its first start", c.name, c.spiceEndpoint))
	}
	return usageError(fmt.Errorf("--name %s: no such projector in SpiceDB at %s; it holds: %s",
		c.name, c.spiceEndpoint, strings.Join(names, ", ")))
}

// explainTransport adds what to try to a SpiceDB (gRPC) error caused by
// TLS on one side only: TLS to a plaintext server, or plaintext to a TLS
// one. insecure is --spicedb-insecure.
func explainTransport(err error, insecure bool) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if !strings.Contains(msg, "rpc error") || strings.Contains(msg, "spicedb-insecure") {
		return err
	}
	switch {
	case !insecure && strings.Contains(msg, "first record does not look like a TLS handshake"):
		return fmt.Errorf("%w; SpiceDB answers in plaintext: try --spicedb-insecure (CONSUMER_SPICEDB_INSECURE=true), "+
			"or enable TLS on SpiceDB", err)
	case insecure && (strings.Contains(msg, "connection closed before server preface received") ||
		strings.Contains(msg, "error reading server preface") || strings.Contains(msg, "http2: frame too large") ||
		strings.Contains(msg, "failed to receive server preface")):
		return fmt.Errorf("%w; SpiceDB may expect TLS: try without --spicedb-insecure (with --spicedb-ca if its "+
			"certificate is not signed by a system root)", err)
	}
	return err
}
