package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
)

// cliResult is what one run of the consumer binary printed and returned.
type cliResult struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// runCLI runs the binary with args and extra environment, for at most 60 s.
func runCLI(t *testing.T, bin string, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cmd.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	res := cliResult{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("consumer %s: %v", strings.Join(args, " "), err)
	}
	return res
}

// usageLines checks a usage error: exit 2, one line of error naming want,
// then the hint to the command's --help.
func usageLines(t *testing.T, r cliResult, cmd, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if r.code != 2 || len(lines) != 2 || !strings.HasPrefix(lines[0], "consumer "+cmd+": ") ||
		!strings.Contains(lines[0], want) || lines[1] != "Run 'consumer "+cmd+" --help' for usage." {
		t.Errorf("consumer %s: exit %d, stderr:\n%s\nwant exit 2, one line with %q and the hint", cmd, r.code, r.stderr, want)
	}
}

// TestCLIConventions runs the binary on bad input: flag errors are one
// line and a hint (exit 2), help exits 0, versions print.
func TestCLIConventions(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the consumer binary")
	}
	bin := buildConsumer(t)
	usageLines(t, runCLI(t, bin, nil, "run", "--bogus"), "run", "unknown flag --bogus")
	usageLines(t, runCLI(t, bin, nil, "rewind", "--to", "-5"), "rewind", "--to -5: a seq is 0 or a positive number")
	usageLines(t, runCLI(t, bin, nil, "rewind"), "rewind", "--to SEQ is required")
	usageLines(t, runCLI(t, bin, nil, "run", "--pds-url", "http://pds", "--lease-timeout", "15"), "run",
		"--lease-timeout 15: want a duration with a unit")
	usageLines(t, runCLI(t, bin, []string{"CONSUMER_SPICEDB_TOKEN=k"}, "run"), "run", "--pds-url (CONSUMER_PDS_URL) or --relay-url (CONSUMER_RELAY_URL) is required")
	usageLines(t, runCLI(t, bin, []string{"CONSUMER_SPICEDB_TOKEN=k"}, "schema", "apply", "--nope"), "schema apply",
		"unknown flag --nope")
	if r := runCLI(t, bin, nil, "nosuch"); r.code != 2 || r.stderr != "consumer: unknown command \"nosuch\"\n"+
		"Run 'consumer --help' for usage.\n" {
		t.Errorf("unknown command: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	for _, args := range [][]string{{"--help"}, {"schema", "--help"}, {"schema", "apply", "--help"}, {"run", "-h"},
		{"status", "--help"}, {"rewind", "--help"}, {"reconcile", "--help"}, {"rebuild", "--help"}, {"tail", "--help"}} {
		r := runCLI(t, bin, nil, args...)
		if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "usage: consumer") {
			t.Errorf("consumer %s: exit %d, stderr %q, stdout %.60q; want the usage on stdout, exit 0",
				strings.Join(args, " "), r.code, r.stderr, r.stdout)
		}
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		r := runCLI(t, bin, nil, args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "consumer dev (commit ") || !strings.Contains(r.stdout, "go1.") {
			t.Errorf("consumer %s: exit %d, stdout %q", strings.Join(args, " "), r.code, r.stdout)
		}
	}
}

// TestCLIAgainstSpiceDB runs the binary against a real SpiceDB: a malformed
// --pds-url is refused before the lease is taken, a typo in --name is
// caught, a TLS mismatch says what to try, status fails on what it can't
// reach.
func TestCLIAgainstSpiceDB(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the consumer binary and starts SpiceDB")
	}
	bin := buildConsumer(t)
	e := testenv.New(t)
	env := []string{"CONSUMER_SPICEDB_TOKEN=" + e.Token, "CONSUMER_SPICEDB_ENDPOINT=" + e.SDB.Addr,
		"CONSUMER_SPICEDB_INSECURE=true", "CONSUMER_LOG_LEVEL=warn"}
	projectors := func() []string {
		names, err := e.Client.Projectors(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return names
	}

	t.Run("malformed --pds-url takes no lease", func(t *testing.T) {
		for _, bad := range []string{"ht!tp://", "ftp://pds.example.com", "https://", "pds.example.com"} {
			r := runCLI(t, bin, env, "run", "--pds-url", bad, "--name", "badurl", "--http-addr", "127.0.0.1:0")
			usageLines(t, r, "run", "--pds-url")
			if r.took > 5*time.Second {
				t.Errorf("--pds-url %s: refused after %v", bad, r.took)
			}
		}
		st, err := e.Client.ReadProjector(t.Context(), "badurl")
		if err != nil {
			t.Fatal(err)
		}
		if !st.Empty() || slices.Contains(projectors(), "badurl") {
			t.Fatalf("a refused start left state behind: %+v (projectors %v)", st, projectors())
		}
	})

	e.StoreCursor(7) // projector "default" exists from here on
	t.Run("--name typo", func(t *testing.T) {
		for _, args := range [][]string{{"status", "--name", "nosuch", "--http-addr", ""},
			{"rewind", "--name", "nosuch", "--to", "3"},
			{"reconcile", "--name", "nosuch", "--pds-url", e.PDS.URL()}} {
			usageLines(t, runCLI(t, bin, env, args...), args[0], "--name nosuch: no such projector in SpiceDB at "+
				e.SDB.Addr+"; it holds: default")
		}
		if got := projectors(); !slices.Equal(got, []string{"default"}) {
			t.Errorf("projectors after the typos: %v, want [default] (rewind must not create one)", got)
		}
	})

	t.Run("one-shot flags read no environment", func(t *testing.T) {
		// A live holder: rewind without --takeover must refuse, whatever
		// CONSUMER_TAKEOVER says.
		lease := spice.LeaseConfig{Client: e.Client, Name: "default", Holder: "live-daemon"}
		if _, err := spice.AcquireLease(t.Context(), lease); err != nil {
			t.Fatal(err)
		}
		r := runCLI(t, bin, append(env, "CONSUMER_TAKEOVER=true", "CONSUMER_TO=0"), "rewind", "--to", "3")
		if r.code != 1 || !strings.Contains(r.stderr, "pass --takeover") {
			t.Errorf("rewind with CONSUMER_TAKEOVER=true: exit %d, stderr %s; want the lease refused", r.code, r.stderr)
		}
		st, err := e.Client.ReadProjector(t.Context(), "default")
		if err != nil {
			t.Fatal(err)
		}
		if st.Holder != "live-daemon" || st.Progress.Cursor != 7 {
			t.Errorf("after rewind with CONSUMER_TAKEOVER=true: holder %q, cursor %d; want live-daemon, 7",
				st.Holder, st.Progress.Cursor)
		}
	})

	t.Run("TLS mismatch", func(t *testing.T) {
		// testenv's SpiceDB speaks plaintext; TLS to it must say to try
		// --spicedb-insecure.
		r := runCLI(t, bin, append(env, "CONSUMER_SPICEDB_INSECURE=false"), "status", "--http-addr", "")
		if r.code != 1 || !strings.Contains(r.stderr, "try --spicedb-insecure") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("TLS to a plaintext SpiceDB: exit %d, stderr:\n%s", r.code, r.stderr)
		}
	})

	t.Run("status fails on what it can't reach", func(t *testing.T) {
		r := runCLI(t, bin, env, "status", "--http-addr", "")
		if r.code != 0 || !strings.Contains(r.stdout, "cursor") {
			t.Errorf("status, SpiceDB only: exit %d, stdout %s, stderr %s", r.code, r.stdout, r.stderr)
		}
		r = runCLI(t, bin, env, "status", "--http-addr", "127.0.0.1:1")
		if r.code != 1 || !strings.Contains(r.stdout, "cursor") || !strings.Contains(r.stderr, "not reachable: the daemon at 127.0.0.1:1") {
			t.Errorf("status, no daemon: exit %d, stdout %s, stderr %s", r.code, r.stdout, r.stderr)
		}
		r = runCLI(t, bin, env, "status", "--http-addr", "", "--pds-url", "http://127.0.0.1:1")
		if r.code != 1 || strings.Contains(r.stdout, "lag") || !strings.Contains(r.stderr, "not reachable: the PDS at") {
			t.Errorf("status, no PDS: exit %d, stdout %s, stderr %s", r.code, r.stdout, r.stderr)
		}
		r = runCLI(t, bin, env, "status", "--http-addr", "", "--spicedb-endpoint", "127.0.0.1:1")
		if r.code != 1 || r.stdout != "" {
			t.Errorf("status, no SpiceDB: exit %d, stdout %s, stderr %s", r.code, r.stdout, r.stderr)
		}
	})
}

// TestPlaintextToTLSSaysDropInsecure: plaintext gRPC to a TLS server says
// to try without --spicedb-insecure.
func TestPlaintextToTLSSaysDropInsecure(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(nil)
	defer srv.Close()
	c, err := spice.Dial(spice.Config{Endpoint: srv.Listener.Addr().String(), Token: "k", Insecure: true,
		CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Projectors(t.Context())
	if err == nil {
		t.Fatal("a plaintext call to a TLS server succeeded")
	}
	if got := explainTransport(err, true).Error(); !strings.Contains(got, "try without --spicedb-insecure") {
		t.Errorf("plaintext to TLS: %s", got)
	}
}

// TestEnvMirrors: daemon configuration reads CONSUMER_*; one-shot flags
// read nothing and show no variable in the help; the NATS flags fall back
// to NATS_URL and NATS_CREDS (flag > CONSUMER_* > NATS_*).
func TestEnvMirrors(t *testing.T) {
	t.Setenv("CONSUMER_TAKEOVER", "true")
	t.Setenv("CONSUMER_EXIT_WHEN_DONE", "true")
	t.Setenv("CONSUMER_PDS_URL", "https://pds.example.com")
	t.Setenv("NATS_URL", "nats://from-nats-env:4222")
	t.Setenv("NATS_CREDS", "/from/nats.creds")
	var f runFlags
	fs := f.flagSet("rebuild")
	exit := fs.Bool("exit-when-done", false, "")
	var help bytes.Buffer
	fs.SetOutput(&help)
	if err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if f.takeover || *exit {
		t.Errorf("CONSUMER_TAKEOVER/CONSUMER_EXIT_WHEN_DONE were read: takeover %v, exit-when-done %v", f.takeover, *exit)
	}
	if f.pdsURL != "https://pds.example.com" || f.nats.url != "nats://from-nats-env:4222" || f.nats.creds != "/from/nats.creds" {
		t.Errorf("pds %q, nats %q, creds %q", f.pdsURL, f.nats.url, f.nats.creds)
	}
	t.Setenv("CONSUMER_NATS_URL", "nats://from-consumer-env:4222")
	f = runFlags{}
	fs = f.flagSet("run")
	if err := parse(fs, nil); err != nil || f.nats.url != "nats://from-consumer-env:4222" {
		t.Errorf("CONSUMER_NATS_URL must win over NATS_URL: %q %v", f.nats.url, err)
	}
	f = runFlags{}
	fs = f.flagSet("run")
	if err := parse(fs, []string{"--nats-url", "nats://flag:4222"}); err != nil || f.nats.url != "nats://flag:4222" {
		t.Errorf("the flag must win: %q %v", f.nats.url, err)
	}

	f = runFlags{}
	fs = f.flagSet("rebuild")
	fs.Bool("exit-when-done", false, "")
	fs.SetOutput(&help)
	var ee *exitError
	if err := parse(fs, []string{"--help"}); !errors.As(err, &ee) || ee.code != 0 {
		t.Fatalf("--help: %v", err)
	}
	h := help.String()
	for _, want := range []string{"--pds-url (CONSUMER_PDS_URL)\n", "--nats-url (CONSUMER_NATS_URL, NATS_URL)\n",
		"--nats-creds (CONSUMER_NATS_CREDS, NATS_CREDS)\n", "--takeover\n", "--exit-when-done\n"} {
		if !strings.Contains(h, want) {
			t.Errorf("the help lacks %q", want)
		}
	}
	for _, bad := range []string{"CONSUMER_TAKEOVER", "CONSUMER_EXIT_WHEN_DONE"} {
		if strings.Contains(h, bad) {
			t.Errorf("the help names %s", bad)
		}
	}
}

// TestRewindToHasNoEnv: --to is command-line only.
func TestRewindToHasNoEnv(t *testing.T) {
	t.Setenv("CONSUMER_FORCE", "true")
	force := flag.NewFlagSet("schema remove-unprefixed", flag.ContinueOnError)
	forced := force.Bool("force", false, "")
	if err := parse(force, nil); err != nil || *forced {
		t.Errorf("CONSUMER_FORCE was read by schema remove-unprefixed: %v %v", *forced, err)
	}
	t.Setenv("CONSUMER_TO", "5")
	fs := flag.NewFlagSet("rewind", flag.ContinueOnError)
	to := fs.Int64("to", -1, "")
	if err := parse(fs, nil); err != nil || *to != -1 {
		t.Errorf("CONSUMER_TO was read: %d %v", *to, err)
	}
}

// TestValidateBeforeDialing: bad configuration is a usage error found
// without contacting anything (the SpiceDB endpoint is unroutable).
func TestValidateBeforeDialing(t *testing.T) {
	t.Setenv("CONSUMER_SPICEDB_TOKEN", "k")
	base := []string{"--spicedb-endpoint", "192.0.2.1:50051", "--spicedb-insecure", "--spicedb-insecure-remote"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pds-url", "ht!tp://"}, `--pds-url "ht!tp://" is not a URL`},
		{[]string{"--pds-url", "ftp://pds"}, `scheme "ftp"`},
		{[]string{"--pds-url", "https://"}, "has no host"},
		{[]string{"--pds-url", "https://pds", "--name", "no such"}, `--name "no such"`},
		{[]string{"--pds-url", "https://pds", "--flush-every", "0s"}, "--flush-every 0s: want a positive duration"},
		{[]string{"--pds-url", "https://pds", "--reconcile-every", "-1s"}, "--reconcile-every -1s"},
		{[]string{"--pds-url", "https://pds", "--heartbeat-every", "20s"}, "shorter than --lease-timeout"},
		{[]string{"--pds-url", "https://pds", "--workers", "-1"}, "--workers -1: want 0 or more"},
		{[]string{"--pds-url", "https://pds", "--batch-updates", "5000"}, "--batch-updates 5000: at most"},
		{[]string{"--pds-url", "https://pds", "--rules", "/no/such/rules.yaml"}, "--rules"},
		{[]string{"--pds-url", "https://pds", "--nats-url", "http://nats"}, `--nats-url "http://nats"`},
		{[]string{"--pds-url", "https://pds", "--nats-url", "nats://n", "--nats-creds", "/no/such"}, "--nats-creds"},
		{[]string{"--pds-url", "https://pds", "--http-addr", "9464"}, "--http-addr"},
		{[]string{"--pds-url", "https://pds", "--log-level", "loud"}, "--log-level"},
		{[]string{"--pds-url", "https://pds", "--plc-url", "plc.directory"}, `--plc-url "plc.directory" has no scheme`},
		{[]string{"--pds-url", "https://pds", "--service-did", "authz.example.com"}, `--service-did "authz.example.com"`},
		{[]string{"--pds-url", "https://pds", "--account-resync-every", "0s"}, "--account-resync-every 0s"},
		{[]string{"--pds-url", "https://pds", "--account-resync-burst", "-1"}, "--account-resync-burst -1"},
	} {
		var f runFlags
		fs := f.flagSet("run")
		start := time.Now()
		err := f.runDaemon(t.Context(), fs, append(append([]string{}, base...), tc.args...), nil)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want a usage error with %q", tc.args, err, tc.want)
		}
		if time.Since(start) > time.Second {
			t.Errorf("%v: took %v: something was contacted", tc.args, time.Since(start))
		}
	}
}

// TestBuildInfo: `consumer version` and the build_info metric say the same.
func TestBuildInfo(t *testing.T) {
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "v1.2.3", "abc1234"
	var out bytes.Buffer
	printVersion(&out)
	if want := "consumer v1.2.3 (commit abc1234, go"; !strings.HasPrefix(out.String(), want) {
		t.Errorf("version: %q, want %q...", out.String(), want)
	}
	mfs, err := newRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{}
	for _, mf := range mfs {
		if mf.GetName() == "spaces_authz_build_info" {
			for _, l := range mf.GetMetric()[0].GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
		}
	}
	b := currentBuild()
	if labels["version"] != "v1.2.3" || labels["commit"] != "abc1234" || labels["goversion"] != b.GoVersion {
		t.Errorf("spaces_authz_build_info labels %v", labels)
	}
}
