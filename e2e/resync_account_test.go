//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/view"
)

// e2eServiceDID is the consumer's service DID in the e2e stack: the aud of
// the accounts' service-auth tokens.
const e2eServiceDID = "did:web:spaces-authz.test"

// resyncAccount calls the consumer's resyncAccount with tok and body.
func (s *stack) resyncAccount(tok, body string) (int, string) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+s.httpAddr+httpapi.ResyncAccountPath, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAccountResyncsItself: a real PDS account, with a service-auth token
// its PDS signs (getServiceAuth, verified against its DID document in the
// local PLC), resyncs its own repo: a relationship deleted behind the
// consumer's back is back. Another account's token naming it is 403; a
// token for another service or an expired one is 401; none of them
// resyncs anything.
func TestAccountResyncsItself(t *testing.T) {
	s := newStack(t, stackOpts{})
	s.startConsumer("--service-did", e2eServiceDID, "--plc-url", s.pds.PLCURL)
	s.waitReady()
	alice, bob := s.account("alice"), s.account("bob")
	a := alice.DID
	s.apply(alice, create(spaceC, "s", space(false)), create(relC, "v", rel("space", a+"/s", "viewer", "acct", bob.DID, "")))
	s.waitOracle(30 * time.Second)
	ctx := context.Background()
	nsid := httpapi.ResyncAccountNSID

	// Drift: the viewer relationship disappears from SpiceDB.
	gone := view.Tuple{ResourceType: "space", ResourceID: view.ObjectID(a, "s"), Relation: "viewer",
		SubjectType: "acct", SubjectID: view.EncodeDID(bob.DID)}
	if _, err := s.client.API().WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: []*v1.RelationshipUpdate{
		{Operation: v1.RelationshipUpdate_OPERATION_DELETE, Relationship: s.client.ToV1(gone)}}}); err != nil {
		t.Fatal(err)
	}
	if s.check("view", view.ObjectID(a, "s"), bob.DID) {
		t.Fatal("the drift did not take")
	}
	resyncs := `spaces_authz_resyncs_total{trigger="rebuild"}`
	before := s.metricValue(resyncs)

	// Refusals first: none may resync.
	bobsTok, err := s.xrpc.GetServiceAuth(ctx, bob, e2eServiceDID, nsid)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := s.resyncAccount(bobsTok, `{"did": "`+a+`"}`); code != http.StatusForbidden ||
		!strings.Contains(body, `"Forbidden"`) {
		t.Errorf("bob's token naming alice: %d %s, want 403", code, body)
	}
	otherAud, err := s.xrpc.GetServiceAuth(ctx, alice, "did:web:other-service.test", nsid)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := s.resyncAccount(otherAud, ""); code != http.StatusUnauthorized ||
		!strings.Contains(body, "another service") {
		t.Errorf("token for another service: %d %s, want 401", code, body)
	}
	otherMethod, err := s.xrpc.GetServiceAuth(ctx, alice, e2eServiceDID, "com.atproto.repo.createRecord")
	if err != nil {
		t.Fatal(err)
	}
	if code, body := s.resyncAccount(otherMethod, ""); code != http.StatusUnauthorized ||
		!strings.Contains(body, "another method") {
		t.Errorf("token for another method: %d %s, want 401", code, body)
	}
	// The PDS signs no token already expired: take one that expires in 5s
	// (exp is sent in whole seconds, and a slow PDS call must not find it
	// past) and wait past it and the validator's 5s leeway.
	exp := time.Now().Add(5 * time.Second)
	shortLived, err := s.xrpc.GetServiceAuthUntil(ctx, alice, e2eServiceDID, nsid, exp)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(exp) + 7*time.Second)
	if code, body := s.resyncAccount(shortLived, ""); code != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Errorf("expired token: %d %s, want 401", code, body)
	}
	if after := s.metricValue(resyncs); after != before {
		t.Fatalf("refused requests resynced: %s %v -> %v", resyncs, before, after)
	}
	if s.check("view", view.ObjectID(a, "s"), bob.DID) {
		t.Fatal("the drift was repaired by a refused request")
	}

	// Alice's own token, no body: 200, and the repo is resynced.
	tok, err := s.xrpc.GetServiceAuth(ctx, alice, e2eServiceDID, nsid)
	if err != nil {
		t.Fatal(err)
	}
	code, body := s.resyncAccount(tok, "")
	var out httpapi.ResyncAccountResponse
	if err := json.Unmarshal([]byte(body), &out); err != nil || code != http.StatusOK || out.DID != a ||
		out.Status != "resynced" {
		t.Fatalf("alice's own resync: %d %s (%v)", code, body, err)
	}
	if after := s.metricValue(resyncs); after != before+1 {
		t.Errorf("%s %v -> %v, want one resync", resyncs, before, after)
	}
	if !s.check("view", view.ObjectID(a, "s"), bob.DID) {
		t.Fatal("the resync did not restore the deleted relationship")
	}
	for result, want := range map[string]float64{"ok": 1, "forbidden": 1, "invalid_token": 3} {
		series := `spaces_authz_account_resync_requests_total{result="` + result + `"}`
		if got := s.metricValue(series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if log := s.consumer.Output(); strings.Contains(log, tok) || strings.Contains(log, bobsTok) ||
		strings.Count(log, "resyncAccount refused") != 4 {
		t.Errorf("the consumer log holds a token or not one line per refusal:\n%s", grep(log, "resyncAccount"))
	}
}
