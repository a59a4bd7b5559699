package spice

import (
	"errors"
	"fmt"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Lease and configuration errors. All are fatal for the writer.
var (
	// ErrFenced: another consumer holds the lease now. This one must stop
	// writing and exit.
	ErrFenced = errors.New("spice: fenced: another consumer took the lease; this one stops writing")
	// ErrReset: the lease and the cursor are both gone while this consumer
	// ran: SpiceDB was reset (restarted empty or restored from an old
	// backup). The view must be rebuilt.
	ErrReset = errors.New("spice: SpiceDB was reset under the consumer: lease and cursor are gone")
	// ErrLeaseLost: the holder tuple is gone but the cursor is there
	// (deleted by hand?). The consumer stops rather than guess.
	ErrLeaseLost = errors.New("spice: lease lost: the holder relationship is gone")
	// ErrSchema: SpiceDB's schema doesn't have what the consumer writes.
	ErrSchema = errors.New("spice: SpiceDB schema mismatch (run `consumer schema apply`)")
	// ErrOwnership: a repo changed hands under the consumer: another source
	// took one of this source's repos over (its epoch moved), or a repo this
	// write claimed changed since it was read. Nothing was written; the
	// consumer restarts from its stored cursor and reloads who owns what.
	ErrOwnership = errors.New("spice: repo ownership changed under the consumer")
	// ErrLeaseHeld is returned by Acquire without waiting when the lease is
	// held and fresh.
	ErrLeaseHeld = errors.New("spice: lease is held by another consumer")
)

// RefusedError is SpiceDB refusing a relationship of a write (an
// InvalidArgument). The caller isolates it with DryRun.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return "spice: SpiceDB refused the write: " + e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// Class is how an error is handled.
type Class int

// Error classes.
const (
	ClassFatal Class = iota
	ClassTransient
	ClassPrecondition
	ClassSchema
	ClassRefused
)

func (c Class) String() string {
	return [...]string{"fatal", "transient", "precondition", "schema", "refused"}[c]
}

// Classify sorts a SpiceDB error (DESIGN §4).
//
// Canceled, Unknown and Internal are transient too: they are what SpiceDB
// answers while its datastore is unavailable (measured with v1.56.2 on
// PostgreSQL stopped: a write in flight gets Canceled "context canceled",
// the next ones Internal "an internal error occurred while accessing the
// datastore" and then Unknown "failed to connect to ...", and reads
// Internal "unexpected consistency middleware error: unable to find
// revision: ..."). A Canceled of the caller's own context is not retried:
// every retry waits on that context.
func Classify(err error) Class {
	st, ok := status.FromError(err)
	if !ok {
		return ClassFatal
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted,
		codes.Canceled, codes.Unknown, codes.Internal:
		return ClassTransient
	case codes.FailedPrecondition:
		if reason(st) == v1.ErrorReason_ERROR_REASON_WRITE_OR_DELETE_PRECONDITION_FAILURE.String() {
			return ClassPrecondition
		}
		return ClassSchema
	case codes.InvalidArgument:
		return ClassRefused
	}
	return ClassFatal
}

func reason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func isNotFound(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.NotFound
}

func wrapf(err error, format string, args ...any) error {
	return fmt.Errorf("spice: "+format+": %w", append(args, err)...)
}
