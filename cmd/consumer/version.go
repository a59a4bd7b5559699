package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// version and commit are set at build time:
//
//	go build -ldflags "-X main.version=v0.2.0 -X main.commit=abc1234" ./cmd/consumer
//
// Without -X main.commit, the commit is the one the go command stamped
// (vcs.revision, with "-dirty" when the checkout had local changes), or
// "unknown" (a build with -buildvcs=false, or outside a git checkout).
var (
	version = "dev"
	commit  = ""
)

// buildInfo is what `consumer version` prints and the build_info metric
// carries.
type buildInfo struct {
	Version, Commit, GoVersion string
}

func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if b.Commit != "" {
		return b
	}
	b.Commit = "unknown"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" {
		b.Commit = rev
		if modified == "true" {
			b.Commit += "-dirty"
		}
	}
	return b
}

func (b buildInfo) String() string {
	return fmt.Sprintf("consumer %s (commit %s, %s)", b.Version, b.Commit, b.GoVersion)
}

func printVersion(w io.Writer) { fmt.Fprintln(w, currentBuild()) }

// cmdVersion prints the version, commit and Go version.
func cmdVersion(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	printVersion(os.Stdout)
	return nil
}
