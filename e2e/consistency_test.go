//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/spice"
	"github.com/spaces-authz/spaces-authz/view"
)

// consistent is what an app does after a write: ask the consumer for the
// ZedToken that covers the commit's rev. The wait is generous: the tests
// check what the token covers, not how fast it comes (a loaded 2-core CI
// machine can stall a commit for seconds).
func (s *stack) consistent(did, rev string) (string, error) {
	return s.consistentWithin(did, rev, 30*time.Second)
}

// consistentWithin is consistent with the wait /v1/consistency is given.
func (s *stack) consistentWithin(did, rev string, wait time.Duration) (string, error) {
	q := url.Values{"did": {did}, "rev": {rev}, "timeout": {wait.String()}}
	resp, err := http.Get("http://" + s.httpAddr + "/v1/consistency?" + q.Encode())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		ZedToken string `json:"zedtoken"`
		Error    string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("consistency: HTTP %d: %s", resp.StatusCode, body.Error)
	}
	return body.ZedToken, nil
}

func (s *stack) checkAt(token, perm, resourceID, subjectDID string) (bool, error) {
	resp, err := s.client.API().CheckPermission(context.Background(), &v1.CheckPermissionRequest{
		Consistency: spice.Consistency(token),
		Resource:    &v1.ObjectReference{ObjectType: s.client.Namespace().Type(view.TypeSpace), ObjectId: resourceID},
		Permission:  perm,
		Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: s.client.Namespace().Type(view.TypeAcct),
			ObjectId: view.EncodeDID(subjectDID)}},
	})
	if err != nil {
		return false, err
	}
	return resp.GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION, nil
}

// TestReadYourWrites follows the documented flow 100 times in a row: write a
// grant to the PDS, take the commit rev, ask /v1/consistency, then check
// with the returned token: allowed on the first try. The revoke, the same
// way: denied on the first try.
func TestReadYourWrites(t *testing.T) { readYourWrites(t, stackOpts{}, 100) }

// readYourWrites runs the read-your-writes flow rounds times on a stack
// made with o.
func readYourWrites(t *testing.T, o stackOpts, rounds int) {
	s := newStack(t, o)
	alice, bob := s.account("alice"), s.account("bob")
	s.startConsumer()
	s.waitReady()
	ctx := context.Background()
	s.apply(alice, create(spaceC, "s", space(true)))
	sp := view.ObjectID(alice.DID, "s")
	for i := range rounds {
		ref, err := s.xrpc.CreateRecord(ctx, alice, relC, "g", map[string]any{"$type": relC, "resourceType": "space",
			"resource": alice.DID + "/s", "permission": "viewer", "subjectType": "acct", "subject": bob.DID})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := s.consistent(alice.DID, ref.Rev)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if ok, err := s.checkAt(tok, "view", sp, bob.DID); err != nil || !ok {
			t.Fatalf("round %d: the grant is not visible with the returned token (%v)", i, err)
		}
		rev, err := s.xrpc.DeleteRecord(ctx, alice, relC, "g")
		if err != nil {
			t.Fatal(err)
		}
		if tok, err = s.consistent(alice.DID, rev); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if ok, err := s.checkAt(tok, "view", sp, bob.DID); err != nil || ok {
			t.Fatalf("round %d: the revoke is not visible with the returned token (%v)", i, err)
		}
	}
}

// BenchmarkCommitToVisible measures commit → visible latency against the
// real PDS on loopback at its maximum write rate: several writers create
// grants as fast as the PDS takes them; for each, the time from the PDS's
// answer (the commit exists) to /v1/consistency answering (the grant is
// committed in SpiceDB). Targets (DESIGN §10): p50 ≤ 20 ms, p99 ≤ 100 ms.
//
// It runs on both SpiceDB datastores (sub-benchmarks memory and postgres).
//
//	go test -tags e2e ./e2e -run '^$' -bench CommitToVisible -benchtime 1x
func BenchmarkCommitToVisible(b *testing.B) {
	for _, o := range []stackOpts{{}, {postgres: true}} {
		b.Run(o.datastore(), func(b *testing.B) { commitToVisible(b, o) })
	}
}

func commitToVisible(b *testing.B, o stackOpts) {
	s := newStack(b, o)
	const writers, perWriter = 8, 250
	var sessions []localpds.Session
	for i := range writers / 2 {
		sessions = append(sessions, s.account(fmt.Sprintf("writer%d", i)))
	}
	s.startConsumer()
	s.waitReady()
	ctx := context.Background()
	for _, sess := range sessions {
		s.apply(sess, create(spaceC, "s", space(false)))
	}
	b.ResetTimer()
	for range b.N {
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		start := time.Now()
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sess := sessions[w%len(sessions)]
				for i := range perWriter {
					ref, err := s.xrpc.CreateRecord(ctx, sess, relC, fmt.Sprintf("w%d-%d-%d", w, i, time.Now().UnixNano()),
						map[string]any{"$type": relC, "resourceType": "space", "resource": sess.DID + "/s",
							"permission": "viewer", "subjectType": "acct", "subject": sessions[(w+1)%len(sessions)].DID})
					if err != nil {
						b.Error(err)
						return
					}
					committed := time.Now()
					if _, err := s.consistent(sess.DID, ref.Rev); err != nil {
						b.Error(err)
						return
					}
					d := time.Since(committed)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
		b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "writes/s")
		b.Logf("%d writes by %d writers in %v (%.0f/s): commit → visible p50 %v, p90 %v, p99 %v, max %v",
			len(lat), writers, elapsed.Round(time.Millisecond), float64(len(lat))/elapsed.Seconds(),
			pct(0.5).Round(10*time.Microsecond), pct(0.9).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond),
			lat[len(lat)-1].Round(10*time.Microsecond))
		rawWriteLatency(b, s)
	}
}

// rawWriteLatency is the floor of the figure above, on the same SpiceDB in
// the same run: one WriteRelationships call of one TOUCH, one after another
// (a visible commit costs at least one such write, after the PDS).
func rawWriteLatency(b *testing.B, s *stack) {
	ctx := context.Background()
	var lat []time.Duration
	for i := range 500 {
		t := view.Tuple{ResourceType: view.TypeSpace, ResourceID: view.ObjectID("did:plc:rawbaseline", "s"),
			Relation: "viewer", SubjectType: view.TypeAcct, SubjectID: view.EncodeDID(fmt.Sprintf("did:plc:raw%04d", i))}
		start := time.Now()
		_, err := s.client.API().WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: []*v1.RelationshipUpdate{
			{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: s.client.ToV1(t)}}})
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "raw-write-p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "raw-write-p99-ms")
	b.Logf("baseline, same SpiceDB: one WriteRelationships of one TOUCH, 500 in a row: p50 %v, p99 %v",
		pct(0.5).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond))
}
