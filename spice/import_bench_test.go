package spice_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/deploy"
	"github.com/spaces-authz/spaces-authz/internal/testrig/pgtest"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// BenchmarkImportVsTouch writes the same 100,000 relationships of the shape
// a rebuild writes (a grant and its lineage) into an empty view on
// SpiceDB-on-PostgreSQL (durable), once with ImportBulkRelationships (one
// stream, one transaction, create-only) and once as 1,000-TOUCH
// WriteRelationships calls, the way the projector writes: the question of
// DESIGN §5 (which is faster for a rebuild into an empty view).
//
//	go test ./spice -run '^$' -bench ImportVsTouch -benchtime 1x
func BenchmarkImportVsTouch(b *testing.B) {
	const n = 100000
	cluster, err := pgtest.Start(context.Background(), pgtest.Options{Durable: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cluster.Remove)
	tuples := make([]view.Tuple, 0, n)
	for i := range n / 2 {
		did := fmt.Sprintf("did:plc:bench%05d", i/50)
		t := view.Tuple{ResourceType: view.TypeSpace, ResourceID: view.ObjectID(did, "s"), Relation: "viewer",
			SubjectType: view.TypeAcct, SubjectID: view.EncodeDID(fmt.Sprintf("did:plc:other%06d", i))}
		rid := view.RecordID(did, "com.atproto.space.relation", fmt.Sprintf("r%d", i))
		tuples = append(tuples, t, view.LineageTuple(t, rid))
	}
	for _, way := range []string{"import", "touch"} {
		b.Run(way, func(b *testing.B) {
			for range b.N {
				sdb, _ := pgtest.SpiceDBOn(b, cluster)
				c, err := spice.Dial(spice.Config{Endpoint: sdb.Addr, Token: sdb.Key, Insecure: true})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				ctx := context.Background()
				if _, err := c.ApplySchema(ctx, deploy.Schema); err != nil {
					b.Fatal(err)
				}
				rels := make([]*v1.Relationship, len(tuples))
				for i, t := range tuples {
					rels[i] = c.ToV1(t)
				}
				start := time.Now()
				if way == "import" {
					stream, err := c.API().ImportBulkRelationships(ctx)
					if err != nil {
						b.Fatal(err)
					}
					for i := 0; i < len(rels); i += 1000 {
						if err := stream.Send(&v1.ImportBulkRelationshipsRequest{Relationships: rels[i:min(i+1000, len(rels))]}); err != nil {
							b.Fatal(err)
						}
					}
					resp, err := stream.CloseAndRecv()
					if err != nil {
						b.Fatal(err)
					}
					if resp.GetNumLoaded() != uint64(len(rels)) {
						b.Fatalf("imported %d of %d", resp.GetNumLoaded(), len(rels))
					}
				} else {
					for i := 0; i < len(rels); i += 1000 {
						var ups []*v1.RelationshipUpdate
						for _, r := range rels[i:min(i+1000, len(rels))] {
							ups = append(ups, &v1.RelationshipUpdate{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: r})
						}
						if _, err := c.API().WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: ups}); err != nil {
							b.Fatal(err)
						}
					}
				}
				took := time.Since(start)
				got := 0
				err = c.Read(ctx, &v1.RelationshipFilter{ResourceType: view.TypeSpace}, "", func(view.Tuple) error { got++; return nil })
				if err != nil {
					b.Fatal(err)
				}
				if got != n/2 {
					b.Fatalf("%d space relationships stored, want %d", got, n/2)
				}
				b.ReportMetric(float64(len(rels))/took.Seconds(), "relationships/s")
				b.Logf("%s: %d relationships in %v", way, len(rels), took.Round(time.Millisecond))
				sdb.Stop()
			}
		})
	}
}
