package spice_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
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

// TestSchemaErrorAfterAReset: a write that SpiceDB refuses for the schema
// is a wrong schema (ErrSchema: an operator's fix) while this consumer's
// lease and cursor are stored, and a reset (ErrReset: a rebuild) when they
// are gone though the schema is there: a SpiceDB that restarted empty and
// had the schema applied again between the failed write and the writer's
// look at the schema. That was taken for a wrong schema, and the consumer
// exited instead of rebuilding.
func TestSchemaErrorAfterAReset(t *testing.T) {
	e := testenv.New(t)
	ctx := t.Context()
	unknown := []view.Update{{Op: view.OpTouch, Tuple: view.Tuple{ResourceType: "no_such_definition", ResourceID: "x",
		Relation: "viewer", SubjectType: view.TypeAcct, SubjectID: "did|plc|x"}}}
	writer := func(name string) *spice.Writer {
		t.Helper()
		st, err := spice.AcquireLease(ctx, spice.LeaseConfig{Client: e.Client, Name: name, Holder: "h"})
		if err != nil {
			t.Fatal(err)
		}
		w := spice.NewWriter(spice.WriterConfig{Client: e.Client, Name: name, Holder: "h", HeartbeatMs: st.HeartbeatMs,
			Epoch: st.Epoch})
		step := checkpoint.MoveTo(name, st.Progress, 10)
		if _, err := w.Write(ctx, nil, step.Updates(), nil); err != nil {
			t.Fatal(err)
		}
		return w
	}

	held := writer("held")
	if _, err := held.Write(ctx, unknown, nil, nil); !errors.Is(err, spice.ErrSchema) {
		t.Fatalf("a definition the schema lacks, lease stored: %v, want ErrSchema", err)
	}

	reset := writer("reset")
	// Everything of the projector is gone (the schema is still there, as
	// if applied again after a restart of an empty SpiceDB).
	if _, err := e.Client.API().DeleteRelationships(ctx, &v1.DeleteRelationshipsRequest{
		RelationshipFilter: &v1.RelationshipFilter{ResourceType: e.Client.Namespace().Type(view.TypeProjector)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := reset.Write(ctx, unknown, nil, nil); !errors.Is(err, spice.ErrReset) {
		t.Fatalf("a schema error with the lease and cursor gone: %v, want ErrReset", err)
	}
}
