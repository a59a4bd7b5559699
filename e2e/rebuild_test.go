//go:build e2e

package e2e

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/internal/testrig/procs"
	"github.com/spaces-authz/spaces-authz/view"
)

// TestOutdatedCursorAfterReplayWindow runs the PDS with a short replay
// window, stops the consumer past it while writes (deletes included) go on,
// and restarts it: the PDS answers OutdatedCursor, the consumer rebuilds
// from snapshots, and SpiceDB matches the oracle.
func TestOutdatedCursorAfterReplayWindow(t *testing.T) {
	s := newStack(t, stackOpts{backfill: 2 * time.Second})
	alice, bob := s.account("alice"), s.account("bob")
	p := s.startConsumer()
	s.waitReady() // so the writes below travel on the stream and a cursor is stored
	a := alice.DID
	s.apply(alice, create(spaceC, "s", space(false)), create(relC, "v", rel("space", a+"/s", "viewer", "acct", bob.DID, "")),
		create(relC, "w", rel("space", a+"/s", "editor", "acct", bob.DID, "")))
	s.waitOracle(30 * time.Second)
	waitCursor(t, s, 1)
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.apply(alice, del(relC, "v"), create(spaceC, "t", space(true)))
	s.apply(bob, create(spaceC, "b", space(false)), create(relC, "x", rel("space", bob.DID+"/b", "admin", "acct", a, "")))
	s.apply(alice, del(relC, "w"))
	time.Sleep(4 * time.Second) // well past the replay window
	logStart := len(p.Output()) // the log file is shared: the first run's "rebuild done" is in it
	p = s.startConsumer()
	deadline := time.Now().Add(60 * time.Second)
	for out := p.Output()[logStart:]; !strings.Contains(out, "OutdatedCursor") || !strings.Contains(out, "rebuild done"); out = p.Output()[logStart:] {
		if time.Now().After(deadline) {
			t.Fatalf("no OutdatedCursor rebuild in the log:\n%s", tail(out, 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	n, took := s.waitOracle(60 * time.Second)
	t.Logf("after OutdatedCursor: %d relationships match the oracle (%v)", n, took)
}

// TestReconcileReportsAndFixesDrift deletes and adds relationships behind
// the consumer's back; reconcile reports exactly those, --fix repairs them,
// and a second run reports none.
func TestReconcileReportsAndFixesDrift(t *testing.T) {
	s := newStack(t, stackOpts{})
	alice, bob, carol := s.account("alice"), s.account("bob"), s.account("carol")
	s.startConsumer()
	a := alice.DID
	s.apply(alice, create(spaceC, "s", space(false)), create(relC, "v", rel("space", a+"/s", "viewer", "acct", bob.DID, "")))
	s.waitOracle(30 * time.Second)
	ctx := context.Background()
	s.cli("reconcile", "--http-addr", s.httpAddr) // no drift: exit 0

	gone := view.Tuple{ResourceType: "space", ResourceID: view.ObjectID(a, "s"), Relation: "viewer",
		SubjectType: "acct", SubjectID: view.EncodeDID(bob.DID)}
	forged := view.Tuple{ResourceType: "space", ResourceID: view.ObjectID(a, "s"), Relation: "admin",
		SubjectType: "acct", SubjectID: view.EncodeDID(carol.DID)}
	_, err := s.client.API().WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: []*v1.RelationshipUpdate{
		{Operation: v1.RelationshipUpdate_OPERATION_DELETE, Relationship: s.client.ToV1(gone)},
		{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: s.client.ToV1(forged)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	out, code := s.cliCode("reconcile", "--did", a, "--http-addr", s.httpAddr)
	if code != 3 {
		t.Fatalf("reconcile exit %d on drift, want 3:\n%s", code, out)
	}
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, a) {
			rows = append(rows, strings.Join(strings.Fields(l)[1:], " "))
		}
	}
	want := []string{"extra " + forged.String(), "missing " + gone.String()}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Fatalf("reconcile reported:\n%s\nwant exactly:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
	out, code = s.cliCode("reconcile", "--fix", "--http-addr", s.httpAddr)
	if code != 0 {
		t.Fatalf("reconcile --fix exit %d:\n%s", code, out)
	}
	out, code = s.cliCode("reconcile", "--http-addr", s.httpAddr)
	if code != 0 || !strings.Contains(out, "no drift") {
		t.Fatalf("after --fix: exit %d:\n%s", code, out)
	}
	s.waitOracle(10 * time.Second)
	if s.check("administer", view.ObjectID(a, "s"), carol.DID) || !s.check("view", view.ObjectID(a, "s"), bob.DID) {
		t.Fatal("the fix did not restore the view")
	}
}

// cliCode runs a one-shot consumer command and returns its output and exit code.
func (s *stack) cliCode(args ...string) (string, int) {
	s.t.Helper()
	p, err := procs.Start(consumerBin(s.t), append(args, s.commonArgs()...), s.env(),
		filepath.Join(s.t.TempDir(), "cli.log"), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	<-p.Done()
	var ee *exec.ExitError
	if err := p.ExitErr(); errors.As(err, &ee) {
		return p.Output(), ee.ExitCode()
	} else if err != nil {
		s.t.Fatal(err)
	}
	return p.Output(), 0
}
