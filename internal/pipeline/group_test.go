package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/testenv"
	"github.com/spaces-authz/spaces-authz/view"
)

func must(t *testing.T, e *testenv.Env, did string, w ...fakepds.Write) {
	t.Helper()
	if _, _, err := e.PDS.Commit(did, w...); err != nil {
		t.Fatal(err)
	}
}

// runGroup runs a group "g" following a's and b's PDSes into a's SpiceDB
// until the test ends.
func runGroup(t *testing.T, a, b *testenv.Env, hooks pipeline.Hooks) *pipeline.Group {
	t.Helper()
	cfg := pipeline.Config{SpiceDB: a.SpiceConfig(), Logger: testenv.Logger(),
		Lease:  pipeline.LeaseConfig{Name: "g", HeartbeatEvery: time.Second, Timeout: 3 * time.Second},
		Engine: pipeline.EngineConfig{FlushEvery: 50 * time.Millisecond, Rules: a.Rules}, Hooks: hooks}
	g, err := pipeline.NewGroup(cfg, []string{a.PDS.URL(), b.PDS.URL()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = g.Close()
	})
	return g
}

// TestGroupFollowsTwoPDSes: one daemon follows two PDSes into one SpiceDB.
// Alice (on A) grants her space to Bob's group (on B): Carol, a member Bob
// adds, can view it; removed, she can't; the view of both repos matches
// both PDSes; each source has its own progress; /v1/consistency finds the
// source of each repo.
func TestGroupFollowsTwoPDSes(t *testing.T) {
	a := testenv.New(t)
	b := a.OtherPDS("")
	alice := testenv.Must(a.PDS.CreateAccount("alice")).DID()
	bob := testenv.Must(b.PDS.CreateAccount("bob")).DID()
	carol := testenv.Must(b.PDS.CreateAccount("carol")).DID()
	must(t, a, alice, testenv.Space("create", "s", false),
		testenv.Relation("create", "v", "space", alice+"/s", "viewer", "group", bob+"/friends", "member"))
	// Both sources replay their PDS's stream from the start.
	for _, e := range []*testenv.Env{a, b} {
		e.Name, _ = pipeline.SourceName("g", e.PDS.URL())
		e.StoreCursor(0)
	}
	g := runGroup(t, a, b, pipeline.Hooks{})
	caughtUp := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok := true
			for i, m := range g.Members() {
				pds := []*fakepds.Server{a.PDS, b.PDS}[i]
				if s := m.Snapshot(); s.Watermark < pds.Head() || !s.Ready() {
					ok = false
				}
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the group did not catch up: %+v", g.Snapshot())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	caughtUp()
	if a.Check("view", "space", view.ObjectID(alice, "s"), carol) {
		t.Fatal("carol can view before bob adds her")
	}
	// Bob (on B) adds Carol to his group after the start: B's stream.
	rev, _, err := b.PDS.Commit(bob, testenv.Group("create", "friends"),
		testenv.Relation("create", "c", "group", bob+"/friends", "direct_member", "acct", carol, ""))
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer wcancel()
	if _, err := g.WaitApplied(wctx, bob, rev.Rev); err != nil {
		t.Fatalf("consistency for bob's commit (B's source): %v", err)
	}
	if !a.Check("view", "space", view.ObjectID(alice, "s"), carol) {
		t.Fatal("carol (in bob's group on B) can't view alice's space (on A)")
	}
	must(t, b, bob, testenv.Delete("com.atproto.space.relation", "c"))
	caughtUp()
	if a.Check("view", "space", view.ObjectID(alice, "s"), carol) {
		t.Fatal("carol can still view after bob removed her")
	}
	testenv.AssertMatchesOracles(a, b)
	// Each source keeps its own progress, named after its host.
	sources, err := a.Client.Sources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, pds := range []*fakepds.Server{a.PDS, b.PDS} {
		name, _ := pipeline.SourceName("g", pds.URL())
		found := false
		for _, s := range sources {
			found = found || s == name
		}
		if !found {
			t.Fatalf("sources %v: no %s", sources, name)
		}
	}
	st := g.Snapshot()
	if len(st.Sources) != 2 || !st.Ready() {
		t.Fatalf("group status: %+v", st)
	}
}

func TestSourceNamesDoNotCollide(t *testing.T) {
	seen := map[string]string{}
	for _, u := range []string{"https://pds-a.example.com", "https://pds.a-example.com", "http://pds-a:2583",
		"http://pds-a-2583", "http://pds_a.example.com:80"} {
		n, err := pipeline.SourceName("x", u)
		if err != nil {
			if strings.Contains(u, "_") {
				continue
			}
			t.Fatal(err)
		}
		if prev, dup := seen[n]; dup {
			t.Fatalf("%s and %s share the source name %s", prev, u, n)
		}
		seen[n] = u
	}
}

// TestFirstRunSaysRebuilding: a first run (no cursor stored) says
// "rebuilding" from the moment it runs, not only once its rebuild is
// accepted: until then the view is empty, and a status that read "running"
// in that gap told operators (and the e2e suite's waits) the view was
// complete. A group says rebuilding while one of its sources is. Each
// source's rebuild is held in the BeforeRebuild hook (the stream is
// connected, the rebuild not yet requested) while the states are read.
func TestFirstRunSaysRebuilding(t *testing.T) {
	a := testenv.New(t)
	b := a.OtherPDS("")
	alice := testenv.Must(a.PDS.CreateAccount("alice")).DID()
	must(t, a, alice, testenv.Space("create", "s", false))
	held := make(chan struct{}, 2)
	release := make(chan struct{})
	g := runGroup(t, a, b, pipeline.Hooks{BeforeRebuild: func(ctx context.Context) {
		held <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
	}})
	for range 2 {
		select {
		case <-held:
		case <-time.After(30 * time.Second):
			t.Fatalf("the sources' first-run rebuilds were not reached: %+v", g.Snapshot())
		}
	}
	for _, m := range g.Members() {
		if s := m.Snapshot(); s.State != pipeline.StateRebuilding {
			t.Errorf("source %s: state %v before its first-run rebuild is requested, want %v", s.Name, s.State,
				pipeline.StateRebuilding)
		}
	}
	if s := g.Snapshot(); s.State != pipeline.StateRebuilding {
		t.Errorf("group: state %v while its sources rebuild, want %v", s.State, pipeline.StateRebuilding)
	}
	close(release)
	deadline := time.Now().Add(30 * time.Second)
	for g.Snapshot().State != pipeline.StateRunning {
		if time.Now().After(deadline) {
			t.Fatalf("the rebuilds did not commit: %+v", g.Snapshot())
		}
		time.Sleep(10 * time.Millisecond)
	}
	testenv.AssertMatchesOracles(a, b)
}
