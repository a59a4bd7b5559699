package firehose_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	"github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/metrictest"
)

func TestSyncClientGetRepoAndListRepos(t *testing.T) {
	pds := fakepds.New(t)
	var dids []string
	for i := range 5 {
		r, err := pds.CreateAccount(fmt.Sprintf("sync%d", i))
		if err != nil {
			t.Fatal(err)
		}
		dids = append(dids, r.DID())
	}
	if _, _, err := pds.Commit(dids[0], spaceWrite("create", "a", false), spaceWrite("create", "b", true), postWrite("p")); err != nil {
		t.Fatal(err)
	}
	c, err := firehose.NewSyncClient(firehose.SyncConfig{URL: pds.URL()})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := c.GetRepo(t.Context(), dids[0], func(coll string) bool { return coll == "com.atproto.space.space" })
	if err != nil {
		t.Fatal(err)
	}
	if snap.DID != dids[0] || snap.Rev != pds.Repo(dids[0]).Rev() || len(snap.Records) != 2 ||
		snap.Records[0].RKey != "a" || snap.Records[1].Value["bubble"] != true {
		t.Fatalf("snapshot %+v", snap)
	}
	// listRepos pages
	page, next, err := c.ListRepos(t.Context(), "", 2)
	if err != nil || len(page) != 2 || next == "" {
		t.Fatalf("first page: %d repos, next %q, %v", len(page), next, err)
	}
	var all []string
	if err := c.ListAllRepos(t.Context(), func(r firehose.RepoInfo) error {
		all = append(all, r.DID)
		return nil
	}); err != nil || len(all) != 5 {
		t.Fatalf("all repos: %v %v", all, err)
	}
	// statuses
	if _, err := pds.Account(dids[1], false, "takendown"); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetRepo(t.Context(), dids[1], nil)
	var xe *firehose.XRPCError
	if !errors.Is(err, firehose.ErrRepoInactive) || !errors.As(err, &xe) || xe.Name != "RepoTakendown" {
		t.Fatalf("taken down repo: %v", err)
	}
	if _, err := c.GetRepo(t.Context(), "did:plc:nobodyhere", nil); !errors.Is(err, firehose.ErrRepoNotFound) {
		t.Fatalf("unknown repo: %v", err)
	}
	pds.SetRepoHook(func(string) error { return errors.New("disk on fire") })
	_, err = c.GetRepo(t.Context(), dids[2], nil)
	if !errors.As(err, &xe) || !xe.Temporary() {
		t.Fatalf("a 500 must be temporary: %v", err)
	}
}

// TestGetRepoRefusesTooLargeRepo: a repo over MaxRepoBytes is refused with
// ErrRepoTooLarge (the DID and the limit in the message), counted as
// too_large, whether the PDS announces its size or streams without end.
func TestGetRepoRefusesTooLargeRepo(t *testing.T) {
	pds := fakepds.New(t)
	r, err := pds.CreateAccount("big")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pds.Commit(r.DID(), spaceWrite("create", "a", false), postWrite("p")); err != nil {
		t.Fatal(err)
	}
	car, err := pds.Repo(r.DID()).Export()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := firehose.NewMetrics(reg)
	limit := int64(len(car) - 1)
	c, err := firehose.NewSyncClient(firehose.SyncConfig{URL: pds.URL(), MaxRepoBytes: limit, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if v := metrictest.Value(t, reg, "spaces_authz_sync_repo_fetches_total", "result", "too_large"); v != 0 {
		t.Fatalf("too_large before any fetch: %v", v)
	}
	_, err = c.GetRepo(t.Context(), r.DID(), nil)
	if !errors.Is(err, firehose.ErrRepoTooLarge) || !strings.Contains(err.Error(), r.DID()) ||
		!strings.Contains(err.Error(), fmt.Sprint(limit)) {
		t.Fatalf("a repo one byte over the limit: %v", err)
	}
	if v := metrictest.Value(t, reg, "spaces_authz_sync_repo_fetches_total", "result", "too_large"); v != 1 {
		t.Fatalf("too_large = %v, want 1", v)
	}
	// At the limit exactly, it is read.
	c, err = firehose.NewSyncClient(firehose.SyncConfig{URL: pds.URL(), MaxRepoBytes: int64(len(car))})
	if err != nil {
		t.Fatal(err)
	}
	if snap, err := c.GetRepo(t.Context(), r.DID(), nil); err != nil || len(snap.Records) != 2 {
		t.Fatalf("a repo at the limit: %v", err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("metrics lint: %v %v", problems, err)
	}
}

// endlessRepo serves a getRepo CAR that never ends (no Content-Length):
// a header, then the same block forever. It reports how much it wrote.
func endlessRepo(t *testing.T) (url string, written func() int64) {
	t.Helper()
	var mu sync.Mutex
	var n int64
	block := bytes.Repeat([]byte{0x60}, 32<<10)
	id, err := cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256).Sum(block)
	if err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	if err := car.WriteHeader(&car.CarHeader{Roots: []cid.Cid{id}, Version: 1}, &hb); err != nil {
		t.Fatal(err)
	}
	head := hb.Bytes()
	section := append(binary.AppendUvarint(nil, uint64(len(id.Bytes())+len(block))), append(id.Bytes(), block...)...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.ipld.car")
		chunk := head
		for {
			k, err := w.Write(chunk)
			mu.Lock()
			n += int64(k)
			mu.Unlock()
			if err != nil || r.Context().Err() != nil {
				return
			}
			chunk = section
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() int64 {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

func TestGetRepoStopsReadingAtTheLimit(t *testing.T) {
	url, written := endlessRepo(t)
	const limit = 4 << 20
	c, err := firehose.NewSyncClient(firehose.SyncConfig{URL: url, MaxRepoBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	did := fakepds.PLCDID("endless")
	_, err = c.GetRepo(ctx, did, nil)
	if !errors.Is(err, firehose.ErrRepoTooLarge) || !strings.Contains(err.Error(), did) {
		t.Fatalf("endless repo: %v", err)
	}
	// The client hung up: the server's writes stop within socket buffers.
	time.Sleep(100 * time.Millisecond)
	if n := written(); n > limit+32<<20 {
		t.Fatalf("server wrote %d bytes for a %d byte limit", n, limit)
	}
}

// TestGetRepoRefusesAnnouncedSize: a Content-Length over the limit is
// refused before a byte of the body is read.
func TestGetRepoRefusesAnnouncedSize(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(int64(1)<<40))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	c, err := firehose.NewSyncClient(firehose.SyncConfig{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := c.GetRepo(ctx, fakepds.PLCDID("huge"), nil); !errors.Is(err, firehose.ErrRepoTooLarge) {
		t.Fatalf("a 1 TiB announced body: %v", err)
	}
}

// pagingPDS serves listRepos from next, which maps a request's cursor to
// the page's repos and next cursor.
func pagingPDS(t *testing.T, next func(string) ([]string, string)) (url string, calls func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		repos, cursor := next(r.URL.Query().Get("cursor"))
		out := map[string]any{"cursor": cursor, "repos": []map[string]any{}}
		for _, d := range repos {
			out["repos"] = append(out["repos"].([]map[string]any), map[string]any{"did": d, "head": "x", "rev": "y", "active": true})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

func TestListAllReposRefusesCursorLoops(t *testing.T) {
	cycles := map[string]map[string]string{
		"A→B→A":   {"": "A", "A": "B", "B": "A"},
		"A→A":     {"": "A", "A": "A"},
		"A→B→C→B": {"": "A", "A": "B", "B": "C", "C": "B"},
	}
	for name, cycle := range cycles {
		t.Run(name, func(t *testing.T) {
			url, calls := pagingPDS(t, func(cursor string) ([]string, string) {
				return []string{fakepds.PLCDID("repo" + cursor)}, cycle[cursor]
			})
			c, err := firehose.NewSyncClient(firehose.SyncConfig{URL: url})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			err = c.ListAllRepos(ctx, func(firehose.RepoInfo) error { return nil })
			if !errors.Is(err, firehose.ErrListReposLoop) || ctx.Err() != nil {
				t.Fatalf("cycling cursors: %v (after %d pages)", err, calls())
			}
			if calls() > len(cycle)+1 {
				t.Fatalf("%d pages read for a cycle of %d", calls(), len(cycle))
			}
		})
	}
}

func TestListAllReposCaps(t *testing.T) {
	// Fresh cursors forever, three repos a page.
	endless := func(cursor string) ([]string, string) {
		n, _ := strconv.Atoi(cursor)
		return []string{fakepds.PLCDID(fmt.Sprint(3 * n)), fakepds.PLCDID(fmt.Sprint(3*n + 1)),
			fakepds.PLCDID(fmt.Sprint(3*n + 2))}, strconv.Itoa(n + 1)
	}
	for name, cfg := range map[string]firehose.SyncConfig{
		"repos": {MaxListRepos: 50},
		"pages": {MaxListPages: 7},
	} {
		t.Run(name, func(t *testing.T) {
			url, calls := pagingPDS(t, endless)
			cfg.URL = url
			c, err := firehose.NewSyncClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			seen := 0
			err = c.ListAllRepos(ctx, func(firehose.RepoInfo) error { seen++; return nil })
			if !errors.Is(err, firehose.ErrListReposLimit) || ctx.Err() != nil {
				t.Fatalf("endless listing: %v (after %d pages)", err, calls())
			}
			if (name == "repos" && seen > 50) || (name == "pages" && calls() != 7) {
				t.Fatalf("%d repos in %d pages", seen, calls())
			}
		})
	}
	// A listing that ends is read whole, over several pages.
	url, _ := pagingPDS(t, func(cursor string) ([]string, string) {
		n, _ := strconv.Atoi(cursor)
		if n == 5 {
			return nil, ""
		}
		return []string{fakepds.PLCDID(fmt.Sprint(n))}, strconv.Itoa(n + 1)
	})
	c, err := firehose.NewSyncClient(firehose.SyncConfig{URL: url, MaxListRepos: 5})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	if err := c.ListAllRepos(t.Context(), func(firehose.RepoInfo) error { seen++; return nil }); err != nil || seen != 5 {
		t.Fatalf("a listing of 5: %d repos, %v", seen, err)
	}
	if _, err := firehose.NewSyncClient(firehose.SyncConfig{URL: url, MaxListPages: -1}); err == nil ||
		!strings.Contains(err.Error(), "MaxListPages") {
		t.Fatalf("negative MaxListPages: %v", err)
	}
}
