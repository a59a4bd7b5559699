package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnvValueErrorSaysWhatToWrite: a bad value in a CONSUMER_* variable
// names the variable and says what a value looks like, as the same bad
// value on the command line does (it said only "parse error").
func TestEnvValueErrorSaysWhatToWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the consumer binary")
	}
	bin := buildConsumer(t)
	base := []string{"CONSUMER_SPICEDB_TOKEN=k", "CONSUMER_SPICEDB_ENDPOINT=127.0.0.1:1", "CONSUMER_SPICEDB_INSECURE=true",
		"CONSUMER_PDS_URL=http://127.0.0.1:1"}
	for _, c := range []struct{ env, want string }{
		{"CONSUMER_LEASE_TIMEOUT=15", `CONSUMER_LEASE_TIMEOUT="15": want a duration with a unit`},
		{"CONSUMER_BATCH_UPDATES=abc", `CONSUMER_BATCH_UPDATES="abc": want a whole number`},
		{"CONSUMER_RESYNC_RATE=fast", `CONSUMER_RESYNC_RATE="fast": want a number`},
		{"CONSUMER_SPICEDB_INSECURE=yes please", `CONSUMER_SPICEDB_INSECURE="yes please": want true or false`},
	} {
		usageLines(t, runCLI(t, bin, append(base, c.env), "run"), "run", c.want)
	}
}

// TestAdminAddrSameAsHTTPAddr: --admin-addr equal to --http-addr is a
// configuration error (exit 2, before anything is dialed), not a bind
// failure (exit 1) found at startup.
func TestAdminAddrSameAsHTTPAddr(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the consumer binary")
	}
	bin := buildConsumer(t)
	env := []string{"CONSUMER_SPICEDB_TOKEN=k", "CONSUMER_LOG_LEVEL=warn"}
	r := runCLI(t, bin, env, "run", "--pds-url", "http://127.0.0.1:1", "--spicedb-endpoint", "127.0.0.1:1",
		"--spicedb-insecure", "--http-addr", "127.0.0.1:39464", "--admin-addr", "127.0.0.1:39464")
	usageLines(t, r, "run", "--admin-addr 127.0.0.1:39464")
}

// TestHelpCommand: `consumer help CMD` prints CMD's help (exit 0), like
// `consumer CMD --help`; it printed the command list.
func TestHelpCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the consumer binary")
	}
	bin := buildConsumer(t)
	for _, args := range [][]string{{"help", "run"}, {"help", "schema"}, {"help", "schema", "apply"}} {
		want := "usage: consumer " + strings.Join(args[1:], " ")
		r := runCLI(t, bin, nil, args...)
		if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, want) {
			t.Errorf("consumer %s: exit %d, stderr %q, stdout %.60q; want %q on stdout, exit 0",
				strings.Join(args, " "), r.code, r.stderr, r.stdout, want)
		}
	}
	r := runCLI(t, bin, nil, "help", "nosuch")
	usageLines(t, r, "help", `unknown command "nosuch"`)
}

// TestCaptureBadURLKeepsFile: capture with a malformed --pds-url is a
// usage error (exit 2) that leaves an existing --out file alone; it
// truncated the file to 0 bytes, then failed with exit 1.
func TestCaptureBadURLKeepsFile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the consumer binary")
	}
	bin := buildConsumer(t)
	out := filepath.Join(t.TempDir(), "corpus.cap")
	if err := os.WriteFile(out, []byte("an earlier capture"), 0o644); err != nil {
		t.Fatal(err)
	}
	usageLines(t, runCLI(t, bin, nil, "capture", "--pds-url", "ftp://pds.example.com", "--out", out), "capture", "--pds-url")
	if b, err := os.ReadFile(out); err != nil || string(b) != "an earlier capture" {
		t.Errorf("--out after a refused capture: %q, %v; want it untouched", b, err)
	}
}

// TestTailValidatesNATSFlags: tail checks its NATS flags like run does
// (exit 2 before connecting), not exit 1 from the connect.
func TestTailValidatesNATSFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the consumer binary")
	}
	bin := buildConsumer(t)
	usageLines(t, runCLI(t, bin, nil, "tail", "--nats-url", "bad url"), "tail", "--nats-url")
	usageLines(t, runCLI(t, bin, nil, "tail", "--nats-url", "nats://127.0.0.1:1", "--nats-cert", "/nonexistent"),
		"tail", "--nats-cert")
}

// TestSchemaSubcommandErrorsNameIt: a configuration error of schema apply
// found after its flags parse names "schema apply" and its --help, as its
// flag errors do (it said "consumer schema:" and pointed to schema --help).
func TestSchemaSubcommandErrorsNameIt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the consumer binary")
	}
	bin := buildConsumer(t)
	env := []string{"CONSUMER_SPICEDB_TOKEN=k", "CONSUMER_SPICEDB_ENDPOINT=127.0.0.1:1", "CONSUMER_SPICEDB_INSECURE=true"}
	usageLines(t, runCLI(t, bin, env, "schema", "apply", "--schema-file", "/nonexistent"), "schema apply", "--schema-file")
	usageLines(t, runCLI(t, bin, env, "schema", "remove-unprefixed", "--schema-prefix", "BAD"), "schema remove-unprefixed",
		"schema prefix")
}

// TestIgnoredAndBorrowedVariablesAreSaid: a CONSUMER_* variable of a
// command-line-only flag is ignored with a warning (it used to be ignored
// silently, so an operator who set CONSUMER_TAKEOVER=true thought it took
// effect), and a NATS_URL borrowed from the nats CLI's environment is
// named, since it turns the fan-out on.
func TestIgnoredAndBorrowedVariablesAreSaid(t *testing.T) {
	bin := buildConsumer(t)
	r := runCLI(t, bin, []string{"CONSUMER_TAKEOVER=true"}, "rewind", "--to", "3", "--spicedb-endpoint", "127.0.0.1:1",
		"--spicedb-insecure")
	if !strings.Contains(r.stderr, "warning: CONSUMER_TAKEOVER is ignored: --takeover is command-line only") {
		t.Errorf("CONSUMER_TAKEOVER=true: stderr %q", r.stderr)
	}
	r = runCLI(t, bin, []string{"NATS_URL=nats://127.0.0.1:1", "CONSUMER_NATS_URL="}, "tail", "--nats-stream", "BAD NAME")
	if strings.Contains(r.stderr, "from NATS_URL") {
		t.Errorf("an empty CONSUMER_NATS_URL wins over NATS_URL, yet the fallback was announced: %q", r.stderr)
	}
	r = runCLI(t, bin, []string{"NATS_URL=nats://127.0.0.1:1"}, "run", "--pds-url", "ftp://x")
	if !strings.Contains(r.stderr, "--nats-url from NATS_URL (no flag or CONSUMER_NATS_URL given)") {
		t.Errorf("NATS_URL fallback not named: stderr %q", r.stderr)
	}
}
