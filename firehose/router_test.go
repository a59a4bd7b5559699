package firehose_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
)

// mapResolver answers from a map the test changes (an account moving).
type mapResolver struct {
	mu sync.Mutex
	m  map[string]string
}

func (r *mapResolver) set(did, endpoint string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[did] = endpoint
}

func (r *mapResolver) PDSEndpoint(_ context.Context, did string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[did]
	if !ok {
		return "", fmt.Errorf("no DID document for %s", did)
	}
	return e, nil
}

func accountOn(t *testing.T, pds *fakepds.Server, name string, rkey string) string {
	t.Helper()
	r, err := pds.CreateAccount(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pds.Commit(r.DID(), spaceWrite("create", rkey, false)); err != nil {
		t.Fatal(err)
	}
	return r.DID()
}

// TestRouterReadsEachRepoFromItsOwnPDS: a relay's consumer reads a repo from
// the PDS the account's DID document names, and from the new one once the
// document moves (an account migration).
func TestRouterReadsEachRepoFromItsOwnPDS(t *testing.T) {
	a, b := fakepds.New(t), fakepds.New(t)
	alice := accountOn(t, a, "alice", "on-a")
	bob := accountOn(t, b, "bob", "on-b")
	res := &mapResolver{m: map[string]string{alice: a.URL(), bob: b.URL()}}
	r, err := firehose.NewRouter(firehose.RouterConfig{Resolver: res, AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	for did, rkey := range map[string]string{alice: "on-a", bob: "on-b"} {
		snap, err := r.GetRepo(t.Context(), did, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Records) != 1 || snap.Records[0].RKey != rkey {
			t.Fatalf("%s: records %+v, want the one on its own PDS (%s)", did, snap.Records, rkey)
		}
	}
	// Bob's document now names A, which does not host him: getRepo says so.
	res.set(bob, a.URL())
	if _, err := r.GetRepo(t.Context(), bob, nil); !errors.Is(err, firehose.ErrRepoNotFound) {
		t.Fatalf("bob on A: %v, want ErrRepoNotFound from A", err)
	}
	res.set(bob, "")
	if _, err := r.GetRepo(t.Context(), bob, nil); !errors.Is(err, firehose.ErrNoPDS) {
		t.Fatalf("no endpoint: %v, want ErrNoPDS", err)
	}
}

// TestRouterRefusesPrivateHosts: a hostile account whose DID document names
// a loopback or plain-http "PDS" (a port inside the cluster) is not read
// unless AllowPrivate.
func TestRouterRefusesPrivateHosts(t *testing.T) {
	pds := fakepds.New(t)
	alice := accountOn(t, pds, "alice", "x")
	tls := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(tls.Close)
	res := &mapResolver{m: map[string]string{alice: pds.URL()}}
	r, err := firehose.NewRouter(firehose.RouterConfig{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetRepo(t.Context(), alice, nil); !errors.Is(err, firehose.ErrNoPDS) {
		t.Fatalf("plain http: %v, want ErrNoPDS", err)
	}
	res.set(alice, tls.URL) // https://127.0.0.1:port
	_, err = r.GetRepo(t.Context(), alice, nil)
	if err == nil || !strings.Contains(err.Error(), "not a public IP") {
		t.Fatalf("loopback over https: %v, want the dial refused", err)
	}
}

// TestRouterBoundsEachHost: at most HostConcurrency getRepo calls are in
// flight to one host, however many resyncs ask.
func TestRouterBoundsEachHost(t *testing.T) {
	pds := fakepds.New(t)
	res := &mapResolver{m: map[string]string{}}
	var dids []string
	for i := range 8 {
		did := accountOn(t, pds, fmt.Sprintf("u%d", i), "s")
		res.set(did, pds.URL())
		dids = append(dids, did)
	}
	var now, peak atomic.Int32
	pds.SetRepoHook(func(string) error {
		n := now.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond)
		now.Add(-1)
		return nil
	})
	r, err := firehose.NewRouter(firehose.RouterConfig{Resolver: res, AllowPrivate: true, HostConcurrency: 2, HostRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, did := range dids {
		wg.Go(func() {
			if _, err := r.GetRepo(t.Context(), did, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p != 2 {
		t.Fatalf("peak concurrent getRepo on one host: %d, want 2", p)
	}
}

// collectionDir serves listReposByCollection from a map, pageSize DIDs a
// page, and counts its calls.
func collectionDir(t *testing.T, byColl map[string][]string, pageSize int) (string, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path != "/xrpc/com.atproto.sync.listReposByCollection" {
			w.WriteHeader(http.StatusNotImplemented)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "MethodNotImplemented", "message": "no"})
			return
		}
		dids := byColl[r.URL.Query().Get("collection")]
		start := 0
		if c := r.URL.Query().Get("cursor"); c != "" {
			_, _ = fmt.Sscan(c, &start)
		}
		end := min(start+pageSize, len(dids))
		out := map[string]any{"repos": []map[string]string{}}
		var repos []map[string]string
		for _, d := range dids[start:end] {
			repos = append(repos, map[string]string{"did": d})
		}
		out["repos"] = repos
		if end < len(dids) {
			out["cursor"] = fmt.Sprint(end)
		}
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &calls
}

type listFunc func(ctx context.Context, fn func(firehose.RepoInfo) error) error

func (f listFunc) ListAllRepos(ctx context.Context, fn func(firehose.RepoInfo) error) error {
	return f(ctx, fn)
}

// TestCollectionListerListsOnlyReposWithTheCollections: a rebuild behind a
// relay lists the repos that hold projected collections, each once, paging
// through listReposByCollection, and never the whole network.
func TestCollectionListerListsOnlyReposWithTheCollections(t *testing.T) {
	var spaces, groups []string
	for i := range 25 {
		spaces = append(spaces, fmt.Sprintf("did:plc:s%02d", i))
	}
	groups = append(groups, "did:plc:s03", "did:plc:g01")
	u, calls := collectionDir(t, map[string][]string{"com.atproto.space.space": spaces, "com.atproto.space.group": groups}, 10)
	fallback := listFunc(func(context.Context, func(firehose.RepoInfo) error) error {
		t.Error("the fallback (every repo) was used although listReposByCollection is served")
		return nil
	})
	l := &firehose.CollectionLister{URL: u, Collections: []string{"com.atproto.space.space", "com.atproto.space.group"},
		Fallback: fallback}
	var got []string
	if err := l.ListAllRepos(t.Context(), func(ri firehose.RepoInfo) error {
		got = append(got, ri.DID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	if len(got) != 26 || got[0] != "did:plc:g01" {
		t.Fatalf("listed %d repos %v, want 26 distinct", len(got), got)
	}
	if c := calls.Load(); c != 3+1 {
		t.Fatalf("%d calls, want 3 pages of spaces and 1 of groups", c)
	}
}

// TestCollectionListerFallsBack: where listReposByCollection is not served,
// the lister falls back to listing every repo (and warns of the cost).
func TestCollectionListerFallsBack(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotImplemented)
		_, _ = w.Write([]byte(`{"error":"MethodNotImplemented","message":"Method Not Implemented"}`))
	}))
	t.Cleanup(srv.Close)
	every := []string{"did:plc:a", "did:plc:b", "did:plc:c"}
	l := &firehose.CollectionLister{URL: srv.URL, Collections: []string{"com.atproto.space.space"},
		Fallback: listFunc(func(_ context.Context, fn func(firehose.RepoInfo) error) error {
			for _, d := range every {
				if err := fn(firehose.RepoInfo{DID: d}); err != nil {
					return err
				}
			}
			return nil
		})}
	var got []string
	if err := l.ListAllRepos(t.Context(), func(ri firehose.RepoInfo) error {
		got = append(got, ri.DID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != strings.Join(every, ",") {
		t.Fatalf("fallback listed %v", got)
	}
	l.Fallback = nil
	if err := l.ListAllRepos(t.Context(), func(firehose.RepoInfo) error { return nil }); err == nil {
		t.Fatal("no fallback: want an error when listReposByCollection is not served")
	}
}

// TestCollectionListerEndlessPagingStops: a hostile listReposByCollection
// that answers every page with the same DID and a fresh cursor never
// repeats a cursor nor adds a DID; the listing must still end (a page
// bound) instead of paging (and remembering cursors) forever. Before the
// fix it ran until the context expired.
func TestCollectionListerEndlessPagingStops(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"cursor":"c%d","repos":[{"did":"did:plc:same"}]}`, n)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	l := &firehose.CollectionLister{URL: srv.URL, Collections: []string{"com.atproto.space.space"}, MaxRepos: 100}
	err := l.ListAllRepos(ctx, func(firehose.RepoInfo) error { return nil })
	if !errors.Is(err, firehose.ErrListReposLimit) {
		t.Fatalf("after %d pages: %v, want ErrListReposLimit", calls.Load(), err)
	}
}
