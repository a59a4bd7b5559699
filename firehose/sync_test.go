package firehose_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
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
