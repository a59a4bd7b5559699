package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Store is a cursor store.
type Store interface {
	// Load returns the stored cursor, or None when there is none.
	Load(ctx context.Context) (int64, error)
	// Save stores seq durably.
	Save(ctx context.Context, seq int64) error
}

// File stores the cursor in a file.
type File struct {
	Path string
}

var _ Store = (*File)(nil)

// Load reads the file; a missing file is None, a corrupt one an error.
func (f *File) Load(context.Context) (int64, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return None, nil
	}
	if err != nil {
		return None, fmt.Errorf("checkpoint: read %s: %w", f.Path, err)
	}
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return None, fmt.Errorf("checkpoint: %s holds %q, not a cursor", f.Path, s)
	}
	return n, nil
}

// Save writes seq atomically (temp file, fsync, rename, fsync dir).
func (f *File) Save(_ context.Context, seq int64) error {
	if seq < 0 {
		return fmt.Errorf("checkpoint: refusing to save cursor %d", seq)
	}
	dir := filepath.Dir(f.Path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.Path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(strconv.FormatInt(seq, 10) + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("checkpoint: write: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("checkpoint: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("checkpoint: close: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("checkpoint: rename: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("checkpoint: open dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("checkpoint: fsync dir: %w", err)
	}
	return nil
}
