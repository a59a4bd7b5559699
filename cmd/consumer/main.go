// Command consumer tails a PDS's commit stream and projects space, group
// and relation records into SpiceDB (see the README and DESIGN.md).
//
//	consumer run             follow the stream (the daemon)
//	consumer schema apply    write the SpiceDB schema
//	consumer rewind --to N   replay the stream from seq N
//	consumer rebuild         resync every repo from snapshots
//	consumer reconcile       compare repos with SpiceDB, repair with --fix
//	consumer status          cursor, head, lag, lease
//	consumer version         version, commit, Go version (also --version)
//
// Every daemon configuration flag has a CONSUMER_* environment variable
// (--pds-url is CONSUMER_PDS_URL); one-shot flags (--takeover, --to, --fix,
// ...) have none. The command line wins, then CONSUMER_*, then NATS_URL and
// NATS_CREDS for the NATS flags. Secrets come from the environment or files
// only. Exit codes: 0 success, 1 failure (including what status can't
// reach), 2 a usage or configuration error, 3 drift found by reconcile.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/spaces-authz/spaces-authz/internal/redact"
)

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
	// cmd names the command whose --help the hint points to (default the
	// command run), e.g. "schema apply".
	cmd string
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{
	"run":       {"follow the PDS stream and project it into SpiceDB (the daemon)", cmdRun},
	"schema":    {"schema apply: write the SpiceDB schema the consumer needs", cmdSchema},
	"rewind":    {"rewind --to SEQ: replay the stream from SEQ (the view never moves backwards)", cmdRewind},
	"status":    {"show cursor, PDS head, lag and lease (--json for scripts)", cmdStatus},
	"capture":   {"capture --out FILE: record raw stream frames in the corpus format", cmdCapture},
	"replay":    {"replay FILE: serve a capture over a websocket at full speed (--loops N)", cmdReplay},
	"synth":     {"synth --out FILE: generate a synthetic stream capture (benchmarks)", cmdSynth},
	"tail":      {"follow the NATS fan-out with a durable pull consumer and print the changes", cmdTail},
	"rebuild":   {"resync every repo from getRepo snapshots, then follow the stream (--exit-when-done to stop)", cmdRebuild},
	"reconcile": {"compare repos with what SpiceDB holds (exit 3 on drift); --fix repairs it", cmdReconcile},
	"version":   {"print the version, commit and Go version", cmdVersion},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: consumer <command> [flags]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'consumer <command> --help' for its flags and the environment variables they read.\n"+
		"Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 drift (reconcile).\n")
}

func main() {
	os.Exit(dispatch(os.Args[1:]))
}

// dispatch runs the command args name and returns the exit code.
func dispatch(args []string) int {
	if len(args) < 1 {
		usage(os.Stderr)
		return 2
	}
	name := args[0]
	cmd, ok := commands[name]
	if !ok {
		switch name {
		case "help":
			// help CMD [SUB] is CMD [SUB] --help.
			if len(args) > 1 {
				if _, ok := commands[args[1]]; !ok {
					return report(os.Stderr, "help", usageError(fmt.Errorf("unknown command %q", args[1])))
				}
				return dispatch(append(append([]string{}, args[1:]...), "--help"))
			}
			usage(os.Stdout)
			return 0
		case "-h", "--help":
			usage(os.Stdout)
			return 0
		case "--version", "-version", "-v":
			printVersion(os.Stdout)
			return 0
		}
		return report(os.Stderr, "", usageError(fmt.Errorf("unknown command %q", name)))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return report(os.Stderr, name, explainTransport(cmd.run(ctx, args[1:]), spiceInsecure))
}

// report prints a command's error to w on one line and returns the exit
// code. A usage error (code 2) adds one line: how to get the command's help.
func report(w io.Writer, name string, err error) int {
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if ee == nil || ee.err != nil {
		// Errors may quote a URL given with its credentials (a NATS or
		// PDS URL with user:password@): print it without them.
		prog := "consumer"
		switch {
		case ee != nil && ee.cmd != "":
			prog += " " + ee.cmd // e.g. "schema apply"
		case name != "":
			prog += " " + name
		}
		fmt.Fprintf(w, "%s: %s\n", prog, redact.String(oneLine(err.Error())))
		if code == 2 {
			fmt.Fprintf(w, "Run '%s --help' for usage.\n", prog)
		}
	}
	return code
}

// oneLine joins a multi-line error (errors.Join, a wrapped server
// message) into one line, its lines separated by "; ".
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}
