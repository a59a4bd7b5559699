package projector

import (
	"context"

	"github.com/spaces-authz/spaces-authz/firehose"
)

// RepoState is a repo's stored bookkeeping (repo:<did>#rev and #status).
type RepoState struct {
	DID       string
	Rev       string
	Status    string // "" or "active" when active
	StatusSeq int64
	// StaleStatuses are the subject IDs of further status tuples (Status
	// is the one with the highest seq); they should not exist.
	StaleStatuses []string
}

// LineageEntry is one stored lineage relationship, parsed: record Path
// (`collection/rkey`) produces Tuple.
type LineageEntry struct {
	Tuple Tuple
	Path  string
}

// Store reads the projector's state back from SpiceDB. Reads take a ZedToken
// and must be at least as fresh as it ("" means fully consistent).
type Store interface {
	// LoadRepos returns every repo with stored bookkeeping.
	LoadRepos(ctx context.Context, token string) ([]RepoState, error)
	// LoadLineage returns a repo's lineage (one prefix read).
	LoadLineage(ctx context.Context, did, token string) ([]LineageEntry, error)
	// LoadData returns the data tuples under the repo's prefix.
	LoadData(ctx context.Context, did, token string) ([]Tuple, error)
}

// Writer writes one batch atomically: the updates, the cursor when it
// changed, and whatever the lease needs. It retries transient errors itself
// and returns the ZedToken of the write, or an error that is fatal to the
// engine (fencing, reset, schema) or a refusal to isolate with DryRun.
type Writer interface {
	Write(ctx context.Context, updates []Update, cursor int64) (token string, err error)
	// DryRun validates updates without applying anything; a non-nil
	// error means SpiceDB refuses at least one of them.
	DryRun(ctx context.Context, updates []Update) error
	// Refused reports whether err is SpiceDB refusing a relationship.
	Refused(err error) bool
}

// Fetcher reads one repo's current records.
type Fetcher interface {
	GetRepo(ctx context.Context, did string, keep func(collection string) bool) (*firehose.Snapshot, error)
}
