package checkpoint_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/internal/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
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

func TestSpiceDBStore(t *testing.T) {
	e := testenv.New(t)
	s := &checkpoint.SpiceDB{Client: e.Client, Name: "tool", Holder: "tool-1"}
	if c, err := s.Load(t.Context()); err != nil || c != checkpoint.None {
		t.Fatalf("empty: %d %v", c, err)
	}
	if err := s.Save(t.Context(), 100); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(t.Context(), 90); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Load(t.Context()); err != nil || c != 90 {
		t.Fatalf("load: %d %v", c, err)
	}
	st, err := e.Client.ReadProjector(t.Context(), "tool")
	if err != nil || st.Holder != "" {
		t.Fatalf("the lease was not released: %+v %v", st, err)
	}
	// A live holder blocks a save unless Takeover.
	if _, err := spice.AcquireLease(t.Context(), spice.LeaseConfig{Client: e.Client, Name: "tool", Holder: "daemon"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(t.Context(), 80); err == nil {
		t.Fatal("saved under another consumer's live lease")
	}
	s.Takeover = true
	if err := s.Save(t.Context(), 80); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Load(t.Context()); c != 80 {
		t.Fatalf("cursor %d", c)
	}
}
