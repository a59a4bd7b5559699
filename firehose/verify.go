package firehose

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/bluesky-social/indigo/events"
	"github.com/ipfs/go-cid"
	cbg "github.com/whyrusleeping/cbor-gen"
)

// Verification of #commit events, for a stream read through an
// intermediary (a relay) that could alter what it forwards. Only commits
// with an op that passed the Filter are verified (Client.deliver, in the
// parallel delivery workers); the others carry nothing that is projected.
//
// What is checked, with indigo's repo package (no hand-written crypto or
// MST code):
//   - the CAR's root is the frame's `commit`, its commit block names the
//     frame's repo and rev, and every block hashes to its CID;
//   - the commit's signature, against the account's current signing key
//     (on a failure the DID's identity is purged and the check made once
//     more: the key may have rotated);
//   - each create and update op's CID is the value the signed MST holds at
//     its path, and the MST holds nothing at a delete op's path;
//   - sync 1.1: when the frame has prevData and the ops carry their prev
//     CIDs, inverting the ops on the new MST gives prevData.

// Unverified reasons (the `reason` label of
// spaces_authz_commits_unverified_total; Event.Unverified).
const (
	// UnverifiedBadCommit: the frame or its CAR is inconsistent (root,
	// DID, rev, block hashes, op list).
	UnverifiedBadCommit = "bad_commit"
	// UnverifiedSignature: the commit is not signed by the account's key.
	UnverifiedSignature = "bad_signature"
	// UnverifiedIdentity: the account's signing key could not be found.
	UnverifiedIdentity = "identity"
	// UnverifiedOpMismatch: an op's record CID is not what the signed MST
	// holds at its path.
	UnverifiedOpMismatch = "op_mismatch"
	// UnverifiedPrevData: inverting the ops does not give prevData (or,
	// with VerifierConfig.RequirePrevData, it is absent).
	UnverifiedPrevData = "prev_data"
	// UnverifiedOther: a CommitVerifier failed with an error of its own.
	UnverifiedOther = "error"
)

var unverifiedReasons = []string{UnverifiedBadCommit, UnverifiedSignature, UnverifiedIdentity, UnverifiedOpMismatch,
	UnverifiedPrevData, UnverifiedOther}

// ErrUnverified is wrapped by GetRepo when a snapshot's commit is not
// signed by the account's key, and by UnverifiedError.
var ErrUnverified = errors.New("commit signature or content not verified")

// UnverifiedError says why a commit was refused.
type UnverifiedError struct {
	Reason string // one of the Unverified* reasons
	Err    error
}

func (e *UnverifiedError) Error() string {
	return "firehose: commit not verified (" + e.Reason + "): " + e.Err.Error()
}

// Unwrap gives both ErrUnverified and the cause.
func (e *UnverifiedError) Unwrap() []error { return []error{ErrUnverified, e.Err} }

func unverified(reason string, format string, args ...any) *UnverifiedError {
	return &UnverifiedError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// unverifiedReason is the bounded reason of a CommitVerifier's error.
func unverifiedReason(err error) string {
	var ue *UnverifiedError
	if errors.As(err, &ue) {
		for _, r := range unverifiedReasons {
			if ue.Reason == r {
				return r
			}
		}
	}
	return UnverifiedOther
}

// CommitVerifier checks a #commit before it is delivered. frame is the
// whole websocket message the event was decoded from (header and body);
// ev has the ops that passed the filter. A non-nil error refuses the
// commit: the event is delivered with Unverified set, and the consumer
// must not apply it. It is called concurrently for events of different
// DIDs.
type CommitVerifier interface {
	VerifyCommit(ctx context.Context, ev *Event, frame []byte) error
}

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Directory (required) resolves accounts' signing keys; Purge is
	// called on a signature failure. *ident.Directory is one.
	Directory identity.Directory
	// RequirePrevData refuses a commit after an account's first (one with
	// `since`) that has no prevData, or an update or delete op without its
	// prev (optional; false accepts them, as pre-sync-1.1 hosts send them,
	// and checks the chain only where present).
	RequirePrevData bool
}

// Verifier is the CommitVerifier over an identity directory, built on
// indigo's repo package.
type Verifier struct {
	dir    identity.Directory
	strict bool
}

var _ CommitVerifier = (*Verifier)(nil)

// NewVerifier checks cfg.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Directory == nil {
		return nil, errors.New("firehose: verifier config: Directory is required")
	}
	return &Verifier{dir: cfg.Directory, strict: cfg.RequirePrevData}, nil
}

// SigningKey is did's current signing key (for SyncConfig.VerifyKey).
func (v *Verifier) SigningKey(ctx context.Context, did string) (atcrypto.PublicKey, error) {
	pd, err := syntax.ParseDID(did)
	if err != nil {
		return nil, fmt.Errorf("firehose: signing key: %w", err)
	}
	id, err := v.dir.LookupDID(ctx, pd)
	if err != nil {
		return nil, fmt.Errorf("firehose: signing key of %s: %w", did, err)
	}
	k, err := id.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("firehose: signing key of %s: %w", did, err)
	}
	return k, nil
}

// PurgeKey drops did's cached identity (for SyncConfig.PurgeKey).
func (v *Verifier) PurgeKey(ctx context.Context, did string) error {
	pd, err := syntax.ParseDID(did)
	if err != nil {
		return fmt.Errorf("firehose: purge key: %w", err)
	}
	return v.dir.Purge(ctx, pd.AtIdentifier())
}

// VerifyCommit checks the #commit in frame (see the package comment of
// verify.go). Errors are *UnverifiedError.
func (v *Verifier) VerifyCommit(ctx context.Context, ev *Event, frame []byte) error {
	msg, err := parseCommitFrame(frame)
	if err != nil {
		return unverified(UnverifiedBadCommit, "%w", err)
	}
	if msg.Repo != ev.DID || msg.Seq != ev.Seq || msg.Rev != ev.Rev {
		return unverified(UnverifiedBadCommit, "frame is not the event's (repo, seq or rev)")
	}
	// LoadRepoFromCAR hashes every block (go-car checks each against its
	// CID) and loads the MST the CAR carries.
	commit, r, err := repo.LoadRepoFromCAR(ctx, bytes.NewReader(msg.Blocks))
	if err != nil {
		return unverified(UnverifiedBadCommit, "read CAR: %w", err)
	}
	if root, err := carHeaderRoot(msg.Blocks); err != nil || !root.Equals(cid.Cid(msg.Commit)) {
		return unverified(UnverifiedBadCommit, "CAR root is not the frame's commit %s", cid.Cid(msg.Commit))
	}
	if commit.DID != msg.Repo || commit.Rev != msg.Rev {
		return unverified(UnverifiedBadCommit, "commit block is for %s rev %s, the frame for %s rev %s",
			commit.DID, commit.Rev, msg.Repo, msg.Rev)
	}
	if err := checkSignature(ctx, commit, v.SigningKey, v.PurgeKey); err != nil {
		return err
	}
	return v.checkOps(msg, r)
}

// checkOps checks the ops against the signed MST, and inverts them to
// prevData where the frame allows.
func (v *Verifier) checkOps(msg *comatproto.SyncSubscribeRepos_Commit, r *repo.Repo) error {
	ops := make([]repo.Operation, 0, len(msg.Ops))
	invertible := msg.PrevData != nil
	for _, o := range msg.Ops {
		if o == nil {
			return unverified(UnverifiedBadCommit, "null op")
		}
		op := repo.Operation{Path: o.Path}
		if o.Cid != nil {
			c := cid.Cid(*o.Cid)
			op.Value = &c
		}
		if o.Prev != nil {
			c := cid.Cid(*o.Prev)
			op.Prev = &c
		}
		switch o.Action {
		case "create", "update":
			if op.Value == nil {
				return unverified(UnverifiedBadCommit, "%s of %q without a cid", o.Action, o.Path)
			}
			got, err := r.MST.Get([]byte(o.Path))
			if err != nil || got == nil || !got.Equals(*op.Value) {
				return unverified(UnverifiedOpMismatch, "%s of %q: the signed tree does not hold %s", o.Action, o.Path, *op.Value)
			}
			if o.Action == "update" && op.Prev == nil {
				invertible = false
			}
		case "delete":
			// The signed tree must not hold the path any more: otherwise
			// a relay could append a delete to any genuine commit.
			if got, err := r.MST.Get([]byte(o.Path)); err != nil || got != nil {
				return unverified(UnverifiedOpMismatch, "delete of %q: the signed tree still holds it", o.Path)
			}
			if op.Prev == nil {
				invertible = false
			}
		default:
			return unverified(UnverifiedBadCommit, "op action %q", o.Action)
		}
		ops = append(ops, op)
	}
	if !invertible {
		if v.strict && msg.Since != nil {
			return unverified(UnverifiedPrevData, "no prevData or op prev: the commit chain can't be checked")
		}
		return nil
	}
	ops, err := repo.NormalizeOps(ops)
	if err != nil {
		return unverified(UnverifiedBadCommit, "ops: %w", err)
	}
	inv := r.MST.Copy()
	for i := range ops {
		if err := repo.InvertOp(&inv, &ops[i]); err != nil {
			return unverified(UnverifiedPrevData, "invert the op on %q: %w", ops[i].Path, err)
		}
	}
	got, err := inv.RootCID()
	if err != nil {
		return unverified(UnverifiedPrevData, "inverted tree: %w", err)
	}
	if want := cid.Cid(*msg.PrevData); !got.Equals(want) {
		return unverified(UnverifiedPrevData, "inverted tree root %s is not prevData %s", got, want)
	}
	return nil
}

// checkSignature verifies commit against its DID's key; on a failure it
// purges the key and tries once more with a fresh one.
func checkSignature(ctx context.Context, commit *repo.Commit, key func(context.Context, string) (atcrypto.PublicKey, error),
	purge func(context.Context, string) error) error {
	for attempt := 0; ; attempt++ {
		k, err := key(ctx, commit.DID)
		if err != nil {
			return unverified(UnverifiedIdentity, "%w", err)
		}
		err = commit.VerifySignature(k)
		if err == nil {
			return nil
		}
		if attempt > 0 || purge == nil {
			return unverified(UnverifiedSignature, "commit %s rev %s: %w", commit.DID, commit.Rev, err)
		}
		if perr := purge(ctx, commit.DID); perr != nil {
			return unverified(UnverifiedSignature, "commit %s rev %s: %w (and the key could not be refreshed: %w)",
				commit.DID, commit.Rev, err, perr)
		}
	}
}

// parseCommitFrame decodes a #commit frame with indigo's generated decoder.
func parseCommitFrame(frame []byte) (*comatproto.SyncSubscribeRepos_Commit, error) {
	r := bytes.NewReader(frame)
	var h events.EventHeader
	if err := h.UnmarshalCBOR(r); err != nil {
		return nil, fmt.Errorf("frame header: %w", err)
	}
	if h.Op != events.EvtKindMessage || h.MsgType != "#commit" {
		return nil, fmt.Errorf("not a #commit frame (%d %q)", h.Op, h.MsgType)
	}
	var msg comatproto.SyncSubscribeRepos_Commit
	if err := msg.UnmarshalCBOR(cbg.NewCborReader(r)); err != nil {
		return nil, fmt.Errorf("#commit: %w", err)
	}
	return &msg, nil
}

// carHeaderRoot is the first root of a CARv1's header.
func carHeaderRoot(car []byte) (cid.Cid, error) {
	hlen, n := binary.Uvarint(car)
	if n <= 0 || hlen == 0 || hlen > uint64(len(car)-n) {
		return cid.Undef, errors.New("CAR header length")
	}
	return carRoot(car[n : n+int(hlen)])
}
