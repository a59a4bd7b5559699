package pipeline

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/spice"
)

// mockIdentity is an Identity over indigo's mock directory.
type mockIdentity struct{ *identity.MockDirectory }

func (m mockIdentity) PDSEndpoint(ctx context.Context, did string) (string, error) {
	id, err := m.LookupDID(ctx, syntax.DID(did))
	if err != nil {
		return "", err
	}
	return id.PDSEndpoint(), nil
}

func (m mockIdentity) PurgeDID(context.Context, string) error { return nil }

// TestConsumerVerifierRequiresPrevData: behind a relay, a commit that
// drops one of its projected ops (a grant's delete) and strips prevData
// (it is not signed) must be refused: without prevData nothing says the op
// list is whole. The consumer built its Verifier without RequirePrevData,
// so it was accepted and the revocation was lost (failed before).
func TestConsumerVerifierRequiresPrevData(t *testing.T) {
	alice, err := fakepds.NewRepo(fakepds.PLCDID("alice"))
	if err != nil {
		t.Fatal(err)
	}
	dir := identity.NewMockDirectory()
	dir.Insert(identity.Identity{DID: syntax.DID(alice.DID()), Keys: map[string]identity.VerificationMethod{
		"atproto": {Type: "Multikey", PublicKeyMultibase: alice.PublicKey().Multibase()}}})
	c, err := New(Config{PDSURL: "http://127.0.0.1:9", SpiceDB: spice.Config{Endpoint: "127.0.0.1:9", Insecure: true,
		Token: "t"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Identity: mockIdentity{dir},
		VerifyCommits: true, Relay: &RelayConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	space := func(action, rkey string) fakepds.Write {
		return fakepds.Write{Action: action, Collection: "com.atproto.space.space", RKey: rkey,
			Value: map[string]any{"$type": "com.atproto.space.space", "displayName": rkey}}
	}
	frame := func(seq int64, edit func(*fakepds.Commit), w ...fakepds.Write) ([]byte, *firehose.Event) {
		cm, err := alice.Apply(w...)
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(cm)
		}
		f, err := fakepds.CommitFrame(cm, seq, "2026-01-01T00:00:00Z")
		if err != nil {
			t.Fatal(err)
		}
		fr, err := firehose.DecodeFrame(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f, fr.Event
	}
	f, ev := frame(1, nil, space("create", "a"), space("create", "b"))
	if err := c.verifier.VerifyCommit(t.Context(), ev, f); err != nil {
		t.Fatalf("first commit: %v", err)
	}
	f, ev = frame(2, nil, space("create", "c"))
	if err := c.verifier.VerifyCommit(t.Context(), ev, f); err != nil {
		t.Fatalf("genuine commit: %v", err)
	}
	// The relay drops the delete of b and strips prevData.
	f, ev = frame(3, func(cm *fakepds.Commit) {
		cm.PrevData = nil
		cm.Ops = cm.Ops[:1]
	}, space("update", "c"), fakepds.Write{Action: "delete", Collection: "com.atproto.space.space", RKey: "b"})
	if err := c.verifier.VerifyCommit(t.Context(), ev, f); err == nil {
		t.Fatal("a commit with an op dropped and prevData stripped was accepted")
	}
}
