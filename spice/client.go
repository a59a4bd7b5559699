package spice

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	authzed "github.com/authzed/authzed-go/v1"
	"github.com/authzed/grpcutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultCallTimeout bounds one SpiceDB call.
const DefaultCallTimeout = 30 * time.Second

// Config says how to reach SpiceDB.
type Config struct {
	// Endpoint is host:port of SpiceDB's gRPC API (required).
	Endpoint string
	// Token is the preshared key (required). The command line reads it
	// from the environment or a file, never only from a flag.
	Token string
	// Insecure uses plaintext gRPC, preshared key included. Validate
	// accepts it only for a loopback Endpoint (a literal loopback IP,
	// "localhost" or a unix socket) unless InsecureRemote is set too.
	Insecure bool
	// InsecureRemote allows Insecure with an Endpoint that is not loopback
	// (a private network the operator trusts, such as a compose network).
	// Optional; false refuses it.
	InsecureRemote bool
	// CAPath is a PEM bundle to verify SpiceDB's certificate; empty uses
	// the system roots. Ignored with Insecure.
	CAPath string
	// CallTimeout bounds each call (default 30s).
	CallTimeout time.Duration
	// Prefix of the project's definitions in SpiceDB (default
	// DefaultPrefix); Unprefixed uses the bare names of the versions before
	// the prefix instead (only for the upgrade, DESIGN §3).
	Prefix     string
	Unprefixed bool
}

// Namespace is the configuration's namespace.
func (c *Config) Namespace() (Namespace, error) {
	if c.Unprefixed {
		return Namespace{}, nil
	}
	if c.Prefix == "" {
		return Namespace{prefix: DefaultPrefix}, nil
	}
	n, err := NewNamespace(c.Prefix)
	if err != nil {
		return Namespace{}, fmt.Errorf("spice: config: %w", err)
	}
	return n, nil
}

// Validate names the first invalid field.
func (c *Config) Validate() error {
	if c.Endpoint == "" {
		return errors.New("spice: config: Endpoint is required")
	}
	if c.Token == "" {
		return errors.New("spice: config: Token is required (set CONSUMER_SPICEDB_TOKEN or --spicedb-token-file)")
	}
	if _, err := c.Namespace(); err != nil {
		return err
	}
	if c.Insecure && !c.InsecureRemote && !IsLoopback(c.Endpoint) {
		return fmt.Errorf("spice: config: Insecure (--spicedb-insecure) would send the preshared key in plaintext "+
			"to %s, which is not a loopback address: use TLS (--spicedb-ca), or set InsecureRemote "+
			"(--spicedb-insecure-remote, CONSUMER_SPICEDB_INSECURE_REMOTE) if the network is private", c.Endpoint)
	}
	return nil
}

// IsLoopback reports whether a gRPC endpoint stays on this host: a unix
// socket (unix:, unix-abstract:), "localhost", or a literal loopback IP
// (127.0.0.0/8, ::1), with or without a port and a dns:/// or
// passthrough:/// scheme. Other names are not resolved: a name that
// resolves to loopback today may not tomorrow.
func IsLoopback(endpoint string) bool {
	if strings.HasPrefix(endpoint, "unix:") || strings.HasPrefix(endpoint, "unix-abstract:") {
		return true
	}
	for _, scheme := range []string{"dns:", "passthrough:"} {
		if rest, ok := strings.CutPrefix(endpoint, scheme); ok {
			// dns:[//authority/]host[:port]
			if after, ok := strings.CutPrefix(rest, "//"); ok {
				_, rest, ok = strings.Cut(after, "/")
				if !ok {
					return false
				}
			}
			endpoint = rest
			break
		}
	}
	host := endpoint
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// Client is a SpiceDB connection.
type Client struct {
	api     *authzed.Client
	timeout time.Duration
	ns      Namespace
}

// Dial connects (lazily, as gRPC does) to SpiceDB.
func Dial(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20))}
	if cfg.Insecure {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpcutil.WithInsecureBearerToken(cfg.Token))
	} else {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAPath != "" {
			pem, err := os.ReadFile(cfg.CAPath)
			if err != nil {
				return nil, fmt.Errorf("spice: read CA bundle: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("spice: CA bundle %s holds no certificate", cfg.CAPath)
			}
			tc.RootCAs = pool
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)), grpcutil.WithBearerToken(cfg.Token))
	}
	api, err := authzed.NewClient(cfg.Endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("spice: dial %s: %w", cfg.Endpoint, err)
	}
	t := cfg.CallTimeout
	if t <= 0 {
		t = DefaultCallTimeout
	}
	ns, _ := cfg.Namespace() // validated above
	return &Client{api: api, timeout: t, ns: ns}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.api.Close() }

// API exposes the raw client (CheckPermission in tests and tools).
func (c *Client) API() *authzed.Client { return c.api }

func (c *Client) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// WriteSchema replaces SpiceDB's schema.
func (c *Client) WriteSchema(ctx context.Context, schema string) error {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	if _, err := c.api.WriteSchema(ctx, &v1.WriteSchemaRequest{Schema: schema}); err != nil {
		return fmt.Errorf("spice: write schema: %w", err)
	}
	return nil
}

// ReadSchema returns SpiceDB's schema text ("" when none is written).
func (c *Client) ReadSchema(ctx context.Context) (string, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.api.ReadSchema(ctx, &v1.ReadSchemaRequest{})
	if err != nil {
		if isNotFound(err) {
			return "", nil
		}
		return "", fmt.Errorf("spice: read schema: %w", err)
	}
	return resp.GetSchemaText(), nil
}

// Consistency returns the read consistency for a ZedToken: at least as
// fresh as it, or fully consistent when it is empty.
func Consistency(token string) *v1.Consistency {
	if token == "" {
		return &v1.Consistency{Requirement: &v1.Consistency_FullyConsistent{FullyConsistent: true}}
	}
	return &v1.Consistency{Requirement: &v1.Consistency_AtLeastAsFresh{AtLeastAsFresh: &v1.ZedToken{Token: token}}}
}
