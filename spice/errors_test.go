package spice_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spaces-authz/spaces-authz/spice"
)

// TestClassify: what SpiceDB answers while its datastore is unavailable
// (the messages are v1.56.2's with PostgreSQL stopped) is retried, wrapped
// or not; a wrong schema, a refused tuple and errors that are not SpiceDB's
// answers are not.
func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want spice.Class
	}{
		{status.Error(codes.Unavailable, "connection refused"), spice.ClassTransient},
		{status.Error(codes.Canceled, "context canceled"), spice.ClassTransient},
		{status.Error(codes.Internal, "an internal error occurred while accessing the datastore"), spice.ClassTransient},
		{status.Error(codes.Unknown, "failed to connect to `user=postgres database=spicedb`: dial error"), spice.ClassTransient},
		{fmt.Errorf("spice: read repo: %w", status.Error(codes.Internal,
			"unexpected consistency middleware error: unable to find revision")), spice.ClassTransient},
		{status.Error(codes.FailedPrecondition, "object definition `x` not found"), spice.ClassSchema},
		{status.Error(codes.InvalidArgument, "bad tuple"), spice.ClassRefused},
		{status.Error(codes.PermissionDenied, "bad key"), spice.ClassFatal},
		{context.Canceled, spice.ClassFatal},
		{errors.New("not a SpiceDB answer"), spice.ClassFatal},
	} {
		if got := spice.Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
