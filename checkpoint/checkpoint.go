package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spaces-authz/spaces-authz/spice"
)

// None is the cursor of a store that holds none yet.
const None int64 = -1

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

// SpiceDB is the daemon's cursor, stored as projector:<name>#cursor in
// SpiceDB. Save takes the lease for the write (waiting for none, or taking
// it over with Takeover, which fences a running consumer) and gives it back.
type SpiceDB struct {
	Client   *spice.Client
	Name     string
	Holder   string
	Takeover bool
}

var _ Store = (*SpiceDB)(nil)

// Load reads the stored cursor.
func (s *SpiceDB) Load(ctx context.Context) (int64, error) {
	st, err := s.Client.ReadProjector(ctx, s.Name)
	if err != nil {
		return None, err
	}
	return st.Cursor, nil
}

// Save moves the cursor to seq under the lease.
func (s *SpiceDB) Save(ctx context.Context, seq int64) error {
	_, err := s.Move(ctx, func(spice.ProjectorState) (int64, []spice.Marker, error) { return seq, nil, nil })
	return err
}

// Move takes the lease, asks decide for the new cursor and markers given
// the current state, writes them in one call, and releases the lease. It
// returns the state it started from.
func (s *SpiceDB) Move(ctx context.Context, decide func(spice.ProjectorState) (int64, []spice.Marker, error)) (spice.ProjectorState, error) {
	st, err := spice.AcquireLease(ctx, spice.LeaseConfig{Client: s.Client, Name: s.Name, Holder: s.Holder,
		Takeover: s.Takeover})
	if err != nil {
		return st, fmt.Errorf("checkpoint: %w", err)
	}
	// The caller manages markers explicitly: the writer must not also
	// clear the rewind marker on its own.
	lease := st
	lease.Rewind = spice.NoSeq
	w := spice.NewWriter(spice.WriterConfig{Client: s.Client, Name: s.Name, Holder: s.Holder, Lease: lease})
	defer func() { _ = w.Release(context.WithoutCancel(ctx)) }()
	seq, markers, err := decide(st)
	if err != nil {
		return st, err
	}
	if _, err := w.WriteMarkers(ctx, markers, seq); err != nil {
		return st, fmt.Errorf("checkpoint: %w", err)
	}
	return st, nil
}
