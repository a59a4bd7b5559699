package httpapi_test

import (
	"context"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
)

// TestLastEventAgeSurvivesAPipelineRestart: spaces_authz_firehose_
// last_event_age_seconds (SpacesAuthzNoEvents: > 900 while connected) is
// the time since the newest event was read. A pipeline restart (here: SpiceDB
// reset under the run, ErrReset, then a rebuild) with nothing to
// replay must not turn it into the process's uptime: on a daemon up for
// days, the first restart would page "no event for 15 minutes" at once.
func TestLastEventAgeSurvivesAPipelineRestart(t *testing.T) {
	e := testenv.New(t)
	alice := testenv.Must(e.PDS.CreateAccount("alice")).DID()
	reg := registry()
	r := e.Start(func(c *pipeline.Config) { c.Registry = reg })
	e.WaitCaughtUp(r)
	time.Sleep(4 * time.Second) // the process has been up a while
	if _, _, err := e.PDS.Commit(alice, testenv.Space("create", "s", false)); err != nil {
		t.Fatal(err)
	}
	e.WaitCaughtUp(r)
	read := time.Now()
	// SpiceDB is reset under the running consumer (its lease and cursor
	// gone): a new run rebuilds from snapshots, starting live.
	for _, typ := range []string{"space", "group", "lineage", "repo", "projector"} {
		if _, err := e.Client.API().DeleteRelationships(context.Background(), &v1.DeleteRelationshipsRequest{
			RelationshipFilter: e.Client.Namespace().Filter(&v1.RelationshipFilter{ResourceType: typ})}); err != nil {
			t.Fatal(err)
		}
	}
	e.WaitRebuilt(r, 1)
	age := metrictest.Value(t, reg, "spaces_authz_firehose_last_event_age_seconds")
	if limit := time.Since(read).Seconds() + 0.5; age > limit {
		t.Fatalf("after a pipeline restart: last_event_age_seconds %v; the newest event was read less than %.1f s ago", age, limit)
	}
}
