package relaytest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
)

// BinEnv overrides the relay binary's location (no version check then).
const BinEnv = "RELAY_BIN"

// SQLiteEnv overrides the sqlite3 CLI's location (default: sqlite3 on PATH).
const SQLiteEnv = "SQLITE3_BIN"

// indigoModule is the module the relay is built from.
const indigoModule = "github.com/bluesky-social/indigo"

// Binary returns the relay binary: $RELAY_BIN, or .cache/bin/relay as
// scripts/deps.sh installs it, checked against its stamp file
// (relay.version) so that a relay built from another indigo version than
// go.mod's is refused rather than silently used.
func Binary() (string, error) {
	if p := os.Getenv(BinEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("relaytest: %s=%s: %w", BinEnv, p, err)
		}
		return p, nil
	}
	cache, err := spicedbtest.CacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(cache, "bin", "relay")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("relaytest: %s not found: run scripts/deps.sh (make deps) or set %s", bin, BinEnv)
	}
	want, err := PinnedVersion()
	if err != nil {
		return "", err
	}
	stamp, err := os.ReadFile(bin + ".version")
	if err != nil {
		return "", fmt.Errorf("relaytest: %s has no stamp (%s.version): run scripts/deps.sh (make deps)", bin, bin)
	}
	if got := strings.TrimSpace(string(stamp)); got != want {
		return "", fmt.Errorf("relaytest: %s was built from indigo %s, go.mod pins %s: run scripts/deps.sh (make deps)", bin, got, want)
	}
	return bin, nil
}

// PinnedVersion is the indigo version in the module's go.mod.
func PinnedVersion() (string, error) {
	root, err := spicedbtest.RepoRoot()
	if err != nil {
		return "", err
	}
	f, err := os.Open(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("relaytest: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		if len(fields) >= 2 && fields[0] == indigoModule {
			return fields[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("relaytest: read go.mod: %w", err)
	}
	return "", fmt.Errorf("relaytest: %s not required in %s", indigoModule, f.Name())
}

// sqliteBin finds the sqlite3 CLI: $SQLITE3_BIN or sqlite3 on PATH.
func sqliteBin() (string, error) {
	if p := os.Getenv(SQLiteEnv); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("sqlite3")
	if err != nil {
		return "", fmt.Errorf("relaytest: the sqlite3 CLI is not on PATH: run scripts/deps.sh (make deps), which installs Debian's sqlite3, or set %s", SQLiteEnv)
	}
	return p, nil
}
