package pgtest_test

import (
	"context"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/deploy"
	"github.com/spaces-authz/spaces-authz/internal/testrig/pgtest"
	"github.com/spaces-authz/spaces-authz/internal/testrig/spicedbtest"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// TestSpiceDBOnPostgresKeepsStateAcrossRestarts is the helper's own check:
// SpiceDB on the test cluster stores what is written, and both SpiceDB and
// PostgreSQL can be restarted on the same data without losing it.
func TestSpiceDBOnPostgresKeepsStateAcrossRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and SpiceDB")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cluster, err := pgtest.Start(ctx, pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Remove)
	sdb, uri := pgtest.SpiceDBOn(t, cluster)
	dial := func(s *spicedbtest.Server) *spice.Client {
		c, err := spice.Dial(spice.Config{Endpoint: s.Addr, Token: s.Key, Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	c := dial(sdb)
	if _, err := c.ApplySchema(ctx, deploy.Schema); err != nil {
		t.Fatal(err)
	}
	rev := view.RevTuple("did:plc:alice", "3kaaaaaaaaaa2")
	_, err = c.API().WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: []*v1.RelationshipUpdate{
		{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: c.ToV1(rev)}}})
	if err != nil {
		t.Fatal(err)
	}
	has := func(c *spice.Client) bool {
		t.Helper()
		found := false
		err := c.Read(ctx, &v1.RelationshipFilter{ResourceType: view.TypeRepo}, "", func(got view.Tuple) error {
			found = found || got == rev
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	// PostgreSQL restarted (an immediate shutdown: crash recovery) under a
	// running SpiceDB, then SpiceDB restarted on the same database.
	cluster.Stop(true)
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	sdb.Stop()
	sdb2, err := spicedbtest.StartServe(ctx, spicedbtest.ServeOptions{PostgresURI: uri, Addr: sdb.Addr, Key: sdb.Key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sdb2.Stop)
	if !has(dial(sdb2)) {
		t.Fatalf("%v is gone after restarting PostgreSQL and SpiceDB", rev)
	}
}
