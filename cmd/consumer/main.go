// Command consumer tails a PDS's commit stream and projects space, group
// and relation records into SpiceDB (see the README and DESIGN.md).
//
//	consumer run             follow the stream (the daemon)
//	consumer schema apply    write the SpiceDB schema
//	consumer rewind --to N   replay the stream from seq N
//	consumer rebuild         resync every repo from snapshots
//	consumer reconcile       compare repos with SpiceDB, repair with --fix
//	consumer status          cursor, head, lag, lease
//
// Every flag has a CONSUMER_* environment variable (--pds-url is
// CONSUMER_PDS_URL); the command line wins. Secrets come from the
// environment or files only.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/spaces-authz/spaces-authz/internal/redact"
)

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

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
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: consumer <command> [flags]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun `consumer <command> -h` for its flags. Every flag also reads CONSUMER_<FLAG_NAME>.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	cmd, ok := commands[name]
	if !ok {
		if name == "-h" || name == "--help" || name == "help" {
			usage()
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "consumer: unknown command %q\n\n", name)
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := cmd.run(ctx, os.Args[2:])
	stop()
	os.Exit(report(os.Stderr, name, err))
}

// report prints a command's error to w and returns the exit code.
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
		fmt.Fprintf(w, "consumer %s: %s\n", name, redact.String(err.Error()))
	}
	return code
}
