package projector

import (
	"context"

	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/view"
)

// Store reads the projector's state back from SpiceDB. Reads take a ZedToken
// and must be at least as fresh as it ("" means fully consistent).
type Store interface {
	// LoadRepos returns every repo with stored bookkeeping.
	LoadRepos(ctx context.Context, token string) ([]view.RepoState, error)
	// LoadLineage returns a repo's lineage (one prefix read).
	LoadLineage(ctx context.Context, did, token string) ([]view.LineageEntry, error)
	// LoadData returns the data tuples under the repo's prefix.
	LoadData(ctx context.Context, did, token string) ([]view.Tuple, error)
	// LoadRepo returns one repo's stored bookkeeping (zero with DID set
	// when none is stored).
	LoadRepo(ctx context.Context, did, token string) (view.RepoState, error)
	// LoadEpoch returns a source's ownership epoch (checkpoint.None when
	// none is stored).
	LoadEpoch(ctx context.Context, source, token string) (int64, error)
}

// Writer writes one batch atomically: the updates, the progress updates
// that go with them (a checkpoint.Step's), and whatever the lease needs, on
// the condition that the guards hold (else an error wrapping
// spice.ErrOwnership, fatal to the engine's run). It
// retries transient errors itself and returns the ZedToken of the write, or
// an error that is fatal to the engine (fencing, reset, schema) or a
// refusal to isolate with DryRun.
type Writer interface {
	Write(ctx context.Context, updates, progress []view.Update, guards []view.Guard) (token string, err error)
	// DryRun validates updates without applying anything; a non-nil
	// error means SpiceDB refuses at least one of them.
	DryRun(ctx context.Context, updates []view.Update) error
	// Refused reports whether err is SpiceDB refusing a relationship.
	Refused(err error) bool
}

// Fetcher reads repos from the PDS: one repo's current records (resyncs,
// reconcile) and the list of every repo it hosts (rebuilds).
type Fetcher interface {
	GetRepo(ctx context.Context, did string, keep func(collection string) bool) (*firehose.Snapshot, error)
	ListAllRepos(ctx context.Context, fn func(firehose.RepoInfo) error) error
}
