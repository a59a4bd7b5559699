package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/spaces-authz/spaces-authz/internal/crashpoint"
	"github.com/spaces-authz/spaces-authz/internal/testrig/procs"
)

// TestReleaseBuildHasNoCrashPoints: the variable that makes the process
// SIGKILL itself is read only by builds with the crashpoints tag (the crash
// tests'), never by the release binary.
func TestReleaseBuildHasNoCrashPoints(t *testing.T) {
	if crashpoint.Enabled {
		t.Fatal("the unit tests were built with the crashpoints tag: the release code path is not under test")
	}
	dir := t.TempDir()
	release := filepath.Join(dir, "release")
	cmd := exec.Command("go", "build", "-o", release, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	crash, err := procs.BuildConsumer(dir)
	if err != nil {
		t.Fatal(err)
	}
	has := func(path string) bool {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Contains(b, []byte(crashpoint.EnvVar))
	}
	if has(release) {
		t.Errorf("the release binary reads %s", crashpoint.EnvVar)
	}
	if !has(crash) {
		t.Errorf("the crash-test binary does not read %s: this test can't tell the builds apart", crashpoint.EnvVar)
	}
}
