package checkpoint_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spaces-authz/spaces-authz/checkpoint"
)

func TestFileStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cursor")
	f := &checkpoint.File{Path: path}
	if c, err := f.Load(t.Context()); err != nil || c != checkpoint.None {
		t.Fatalf("empty store: %d %v", c, err)
	}
	for _, seq := range []int64{0, 42, 7} {
		if err := f.Save(t.Context(), seq); err != nil {
			t.Fatal(err)
		}
		if c, err := f.Load(t.Context()); err != nil || c != seq {
			t.Fatalf("after Save(%d): %d %v", seq, c, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temp files left behind: %v", entries)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(t.Context()); err == nil {
		t.Fatal("a corrupt cursor loaded without error")
	}
	if err := f.Save(t.Context(), -3); err == nil {
		t.Fatal("saved a negative cursor")
	}
}
