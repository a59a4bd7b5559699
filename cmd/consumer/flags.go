package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/ident"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/projector"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// EnvPrefix is prepended to a flag's name to find its environment variable.
const EnvPrefix = "CONSUMER_"

// cliOnly are the flags with no environment variable: one-shot requests
// and tool options, which a variable left in an env file would repeat on
// every run (a stale CONSUMER_TAKEOVER=true would fence the running daemon
// each time a tool starts). Daemon configuration (URLs, keys, names,
// limits) keeps its CONSUMER_* variable.
var cliOnly = map[string]bool{
	"takeover": true, "to": true, "fix": true, "exit-when-done": true, "dry-run": true, "did": true,
	"json": true, "out": true, "loops": true, "count": true, "cursor": true, "cursor-file": true,
	"frames": true, "duration": true, "events": true, "accounts": true, "projected": true, "seed": true,
	"addr": true, "schema-file": true, "force": true,
}

// ecosystemEnv are variables of other tools a flag falls back to when
// neither the flag nor its CONSUMER_* variable is set: the NATS CLI's own.
var ecosystemEnv = map[string]string{
	"nats-url":   "NATS_URL",
	"nats-creds": "NATS_CREDS",
}

// envName is the environment variable that mirrors a flag ("" for none).
func envName(flagName string) string {
	if cliOnly[flagName] {
		return ""
	}
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// envNames are the variables a flag reads, in order of precedence.
func envNames(flagName string) []string {
	n := envName(flagName)
	if n == "" {
		return nil
	}
	if e, ok := ecosystemEnv[flagName]; ok {
		return []string{n, e}
	}
	return []string{n}
}

// usageError is a configuration error: exit 2, and a hint to --help.
func usageError(err error) error { return &exitError{code: 2, err: err} }

// printUsage writes a command's flags to w.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: consumer %s [flags]\n\n", fs.Name())
	fs.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(w, "  --%s", f.Name)
		if env := envNames(f.Name); len(env) > 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(env, ", "))
		}
		fmt.Fprintf(w, "\n    \t%s", f.Usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
	fmt.Fprintf(w, "\nA flag shown with a variable also reads it; the command line wins, then CONSUMER_*, then NATS_*.\n")
}

var (
	badBool  = regexp.MustCompile(`^invalid boolean value "(.*)" for -([-\w]+): `)
	badValue = regexp.MustCompile(`^invalid value "(.*)" for flag -([-\w]+): `)
)

// flagError rewrites the flag package's messages in the --flag spelling
// the help uses, saying what a value should look like.
func flagError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("unknown flag --%s", strings.TrimPrefix(name, "-"))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("--%s needs a value", strings.TrimPrefix(name, "-"))
	}
	if m := badBool.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("--%s=%s: want true or false", m[2], m[1])
	}
	if m := badValue.FindStringSubmatch(msg); m != nil {
		want := strings.TrimPrefix(msg, m[0])
		if w := wantValue(fs.Lookup(m[2])); w != "" {
			want = w
		}
		return fmt.Errorf("--%s %s: %s", m[2], m[1], want)
	}
	return errors.New(msg)
}

// wantValue says what a value of flag f looks like ("" when not known).
func wantValue(f *flag.Flag) string {
	if f == nil {
		return ""
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return "want true or false"
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return "want a duration with a unit, e.g. 500ms, 15s, 2m or 1h"
	case int, int64, uint, uint64:
		return "want a whole number"
	case float64:
		return "want a number"
	}
	return ""
}

// parse parses args, then fills every flag not given on the command line
// from its environment variables (CONSUMER_*, then NATS_URL/NATS_CREDS for
// the NATS flags). -h and --help print the flags to stdout (or the flag
// set's output when one was set) and return an exitError with code 0; a
// bad flag returns a one-line usage error (code 2).
func parse(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	if out == os.Stderr {
		out = os.Stdout
	}
	fs.Usage = func() {} // help is printed below, errors by report
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(out, fs)
			return &exitError{code: 0}
		}
		return &exitError{code: 2, err: flagError(fs, err), cmd: fs.Name()}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if cliOnly[f.Name] {
			// Ignored, by design; say so, or an operator who set it thinks
			// it took effect.
			if env := EnvPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")); os.Getenv(env) != "" {
				fmt.Fprintf(os.Stderr, "consumer %s: warning: %s is ignored: --%s is command-line only\n", fs.Name(), env, f.Name)
			}
		}
		if set[f.Name] || err != nil {
			return
		}
		for i, env := range envNames(f.Name) {
			v, ok := os.LookupEnv(env)
			if !ok {
				continue
			}
			if i > 0 && v != "" {
				// A fallback of another tool's (NATS_URL): a variable left
				// in a shell for the nats CLI turns the fan-out on.
				fmt.Fprintf(os.Stderr, "consumer %s: --%s from %s (no flag or %s given)\n", fs.Name(), f.Name, env,
					envName(f.Name))
			}
			if e := fs.Set(f.Name, v); e != nil {
				// The flag package says only "parse error" for a bad
				// number, duration or boolean: say what to write.
				if w := wantValue(f); w != "" && e.Error() == "parse error" {
					e = errors.New(w)
				}
				err = &exitError{code: 2, err: fmt.Errorf("%s=%q: %w", env, v, e), cmd: fs.Name()}
			}
			return
		}
	})
	return err
}

// common are the flags every command that talks to SpiceDB and the PDS
// shares.
type common struct {
	pdsURL   string
	relayURL string
	// severalPDS: the command follows several PDSes (run, rebuild).
	severalPDS      bool
	allowPrivatePDS bool
	// dir is the identity directory, once built (identity()).
	dir            *ident.Directory
	spiceEndpoint  string
	spiceTokenFile string
	spiceInsecure  bool
	// spiceInsecureRemote allows --spicedb-insecure to a non-loopback host.
	spiceInsecureRemote bool
	spiceCA             string
	schemaPrefix        string
	name                string
	rulesPath           string
	logLevel            string
	logFormat           string
	// plcURL is the PLC directory that resolves did:plc documents.
	plcURL string
	// loaded are the rules, once read (rules()).
	loaded *view.Rules
}

func (c *common) register(fs *flag.FlagSet, defaultFormat string) {
	fs.StringVar(&c.pdsURL, "pds-url", "",
		"PDS base URL, http(s):// or ws(s):// (this or --relay-url is required); run and rebuild follow several, comma-separated, "+
			"each a source named <name>-<host>")
	fs.StringVar(&c.relayURL, "relay-url", "",
		"follow a relay instead of one PDS: its stream, with repos read from each account's own PDS (found through --plc-url)")
	fs.BoolVar(&c.allowPrivatePDS, "allow-private-pds", false,
		"with --relay-url: let DID documents name PDSes on loopback, private addresses or plain http, and did:web documents "+
			"be fetched from private addresses (tests, private networks); off, a hostile account can't point the consumer at a port inside its network")
	fs.StringVar(&c.spiceEndpoint, "spicedb-endpoint", "127.0.0.1:50051", "SpiceDB gRPC host:port")
	fs.StringVar(&c.spiceTokenFile, "spicedb-token-file", "", "file holding the SpiceDB preshared key (or set CONSUMER_SPICEDB_TOKEN)")
	fs.BoolVar(&c.spiceInsecure, "spicedb-insecure", false,
		"plaintext gRPC to SpiceDB, key included: refused unless the endpoint is loopback (127.0.0.1, ::1, localhost, unix:)")
	fs.BoolVar(&c.spiceInsecureRemote, "spicedb-insecure-remote", false,
		"allow --spicedb-insecure to a non-loopback endpoint (a private network you trust, e.g. compose)")
	fs.StringVar(&c.spiceCA, "spicedb-ca", "", "PEM CA bundle to verify SpiceDB's TLS certificate (default: system roots)")
	fs.StringVar(&c.schemaPrefix, "schema-prefix", spice.DefaultPrefix,
		"prefix of the project's SpiceDB definitions (spaces_authz/space, …); \"\" for the bare names of versions before 0.2 (upgrade only)")
	fs.StringVar(&c.name, "name", pipeline.DefaultName, "projector name in SpiceDB: one per stream (a daemon that follows several PDSes names each source <name>-<host>)")
	fs.StringVar(&c.rulesPath, "rules", "", "rules file (default: the built-in rules of DESIGN §2)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", defaultFormat, "json or text")
	fs.StringVar(&c.plcURL, "plc-url", DefaultPLCURL,
		"PLC directory that resolves did:plc documents (accounts' PDSes behind --relay-url, their keys for verified commits and service-auth tokens)")
}

func (c *common) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--log-level: %w", err)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var w io.Writer = os.Stderr
	switch c.logFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, &exitError{code: 2, err: fmt.Errorf("--log-format %q: want json or text", c.logFormat)}
}

// secret reads a secret from the file a --*-file flag names (its name is
// fileFlag) or, when no file is given, from the environment variable env.
// It returns "" when neither is set; a named file that can't be read or
// is empty is an error.
func secret(fileFlag, file, env string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", &exitError{code: 2, err: fmt.Errorf("read --%s: %w", fileFlag, err)}
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", &exitError{code: 2, err: fmt.Errorf("--%s %s is empty", fileFlag, file)}
		}
		return t, nil
	}
	return os.Getenv(env), nil
}

// token reads the SpiceDB key from CONSUMER_SPICEDB_TOKEN or the file.
func (c *common) token() (string, error) {
	t, err := secret("spicedb-token-file", c.spiceTokenFile, EnvPrefix+"SPICEDB_TOKEN")
	if err != nil || t != "" {
		return t, err
	}
	return "", &exitError{code: 2, err: errors.New("no SpiceDB key: set CONSUMER_SPICEDB_TOKEN or --spicedb-token-file")}
}

func (c *common) spiceConfig() (spice.Config, error) {
	tok, err := c.token()
	if err != nil {
		return spice.Config{}, err
	}
	cfg := spice.Config{Endpoint: c.spiceEndpoint, Token: tok, Insecure: c.spiceInsecure,
		InsecureRemote: c.spiceInsecureRemote, CAPath: c.spiceCA, Prefix: c.schemaPrefix, Unprefixed: c.schemaPrefix == ""}
	if err := cfg.Validate(); err != nil {
		return spice.Config{}, &exitError{code: 2, err: err}
	}
	if !c.spiceInsecure {
		if err := checkCA("spicedb-ca", c.spiceCA); err != nil {
			return spice.Config{}, err
		}
	}
	spiceInsecure = c.spiceInsecure
	return cfg, nil
}

func (c *common) rules() (*view.Rules, error) {
	if c.loaded != nil {
		return c.loaded, nil
	}
	r, err := view.LoadRules(c.rulesPath)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--rules: %w", err)}
	}
	c.loaded = r
	return r, nil
}

func (c *common) needPDS() error {
	switch {
	case c.pdsURL == "" && c.relayURL == "":
		return &exitError{code: 2, err: errors.New("--pds-url (CONSUMER_PDS_URL) or --relay-url (CONSUMER_RELAY_URL) is required")}
	case c.pdsURL != "" && c.relayURL != "":
		return usageError(errors.New("--pds-url and --relay-url: give one (a relay already carries its PDSes' streams)"))
	}
	return nil
}

// pdsURLs are the PDSes of --pds-url, a comma-separated list.
func (c *common) pdsURLs() []string {
	var out []string
	for _, u := range strings.Split(c.pdsURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// relayConfig is how repos are read behind --relay-url (nil without one).
func (c *common) relayConfig() *pipeline.RelayConfig {
	if c.relayURL == "" {
		return nil
	}
	return &pipeline.RelayConfig{AllowPrivateHosts: c.allowPrivatePDS}
}

// fetcher reads repos for the one-shot commands: from the PDS, or behind
// a relay from each account's own PDS.
func (c *common) fetcher() (projector.Fetcher, error) {
	own, err := firehose.NewSyncClient(firehose.SyncConfig{URL: c.streamURL()})
	if err != nil || c.relayURL == "" {
		return own, err
	}
	dir, err := c.identity(nil)
	if err != nil {
		return nil, err
	}
	return firehose.NewRouter(firehose.RouterConfig{Resolver: dir, AllowPrivate: c.allowPrivatePDS, Lister: own})
}

// streamURL is the host whose stream is followed: the PDS or the relay.
func (c *common) streamURL() string {
	if c.relayURL != "" {
		return c.relayURL
	}
	return c.pdsURL
}

func (c *common) dial() (*spice.Client, error) {
	cfg, err := c.spiceConfig()
	if err != nil {
		return nil, err
	}
	return spice.Dial(cfg)
}

// durationFlag documents durations consistently.
func durationFlag(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	fs.DurationVar(p, name, def, usage)
}
