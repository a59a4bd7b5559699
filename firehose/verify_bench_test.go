package firehose_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/bluesky-social/indigo/events"
	cbg "github.com/whyrusleeping/cbor-gen"

	"github.com/spaces-authz/spaces-authz/firehose"
	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/tools/capture"
	"github.com/spaces-authz/spaces-authz/view"
)

// verifyMix is a relay-shaped capture with keys for every account: the
// real relay frames (many DIDs on many hosts, interleaved; none projected)
// and, spread among them, signed commits that create a projected record
// in repos that already hold 40 posts (about 3% of frames). dir is an
// in-memory directory holding every account's key.
func verifyMix(tb testing.TB) (frames [][]byte, projected int, dir identity.Directory) {
	tb.Helper()
	relay, err := capture.ReadFile(relayCorpus + "/frames.bin.zst")
	if err != nil {
		tb.Fatal(err)
	}
	mock := identity.NewMockDirectory()
	for did, raw := range corpusDIDDocs(tb) {
		var doc identity.DIDDocument
		if err := json.Unmarshal(raw, &doc); err != nil {
			tb.Fatalf("%s: %v", did, err)
		}
		mock.Insert(identity.ParseIdentity(&doc))
	}
	const every = 30 // one projected commit per 30 relay frames
	for i, f := range relay {
		frames = append(frames, f)
		if i%every != every-1 {
			continue
		}
		r, err := fakepds.NewRepo(fakepds.PLCDID(fmt.Sprint("bench", i)))
		if err != nil {
			tb.Fatal(err)
		}
		var posts []fakepds.Write
		for j := range 40 {
			posts = append(posts, postWrite(fmt.Sprintf("p%03d", j)))
		}
		if _, err := r.Apply(posts...); err != nil {
			tb.Fatal(err)
		}
		frames = append(frames, signedFrame2(tb, r, int64(1_000_000+i), spaceWrite("create", "root", false)))
		projected++
		id := identity.Identity{DID: mustDID(r.DID()), Keys: map[string]identity.VerificationMethod{
			"atproto": {Type: "Multikey", PublicKeyMultibase: r.PublicKey().Multibase()}}}
		mock.Insert(id)
	}
	return frames, projected, mock
}

func signedFrame2(tb testing.TB, r *fakepds.Repo, seq int64, writes ...fakepds.Write) []byte {
	tb.Helper()
	c, err := r.Apply(writes...)
	if err != nil {
		tb.Fatal(err)
	}
	f, err := fakepds.CommitFrame(c, seq, "2026-01-01T00:00:00Z")
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// oursVerified is the client's path for one frame with verification on:
// decode with the rules' filter; for a commit with a projected op, verify
// it (a copy of the frame, as the reader hands it to the worker), then
// read its records.
func oursVerified(ctx context.Context, v firehose.CommitVerifier, filter firehose.Filter, frame []byte) (verified bool, err error) {
	fr, err := firehose.DecodeFrame(frame, filter)
	if err != nil {
		return false, err
	}
	if ev := fr.Event; ev != nil && ev.Kind == firehose.KindCommit && len(ev.Ops) > 0 && ev.Malformed == "" {
		raw := append([]byte(nil), frame...)
		if err := v.VerifyCommit(ctx, ev, raw); err != nil {
			return false, err
		}
		verified = true
	}
	fr.DecodeRecords()
	return verified, nil
}

// indigoVerified is what a verifying consumer built on indigo does with
// every frame: HandleRepoStream's parse (header, then the generated
// decoder of the body), then for each #commit the repo CAR read into a
// tree (LoadRepoFromCAR) and VerifyCommitSignature against the directory.
func indigoVerified(ctx context.Context, dir identity.Directory, frame []byte) error {
	r := cbg.NewCborReader(bytes.NewReader(frame))
	var h events.EventHeader
	if err := h.UnmarshalCBOR(r); err != nil {
		return err
	}
	switch h.MsgType {
	case "#commit":
		var c comatproto.SyncSubscribeRepos_Commit
		if err := c.UnmarshalCBOR(r); err != nil {
			return err
		}
		if _, _, err := repo.LoadRepoFromCAR(ctx, bytes.NewReader(c.Blocks)); err != nil {
			return err
		}
		return repo.VerifyCommitSignature(ctx, dir, &c)
	case "#identity":
		var m comatproto.SyncSubscribeRepos_Identity
		return m.UnmarshalCBOR(r)
	case "#account":
		var m comatproto.SyncSubscribeRepos_Account
		return m.UnmarshalCBOR(r)
	case "#sync":
		var m comatproto.SyncSubscribeRepos_Sync
		return m.UnmarshalCBOR(r)
	}
	return nil
}

// BenchmarkVerifyRelayMix compares, on the same relay-shaped frames in the
// same run, the client's path with verification on (only the ~3% of
// commits with a projected op are verified) with a verifying consumer on
// indigo (every frame parsed, every commit's CAR read and its signature
// checked). One goroutine each; no network (an in-memory directory). It
// reports both rates and their ratio (target ≥ 10×).
func BenchmarkVerifyRelayMix(b *testing.B) {
	frames, projected, dir := verifyMix(b)
	v, err := firehose.NewVerifier(firehose.VerifierConfig{Directory: dir})
	if err != nil {
		b.Fatal(err)
	}
	filter := view.DefaultRules().MatchPath
	ctx := context.Background()
	// Both paths must accept every frame before anything is timed.
	verified := 0
	for _, f := range frames {
		ok, err := oursVerified(ctx, v, filter, f)
		if err != nil {
			b.Fatal(err)
		}
		if ok {
			verified++
		}
		if err := indigoVerified(ctx, dir, f); err != nil {
			b.Fatal(err)
		}
	}
	if verified != projected {
		b.Fatalf("%d commits verified, want the %d projected ones", verified, projected)
	}
	b.Logf("%d frames, %d (%.1f%%) with a projected op", len(frames), projected, 100*float64(projected)/float64(len(frames)))
	const rounds = 4
	var ours, theirs time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for range rounds {
			for _, f := range frames {
				if _, err := oursVerified(ctx, v, filter, f); err != nil {
					b.Fatal(err)
				}
			}
		}
		ours += time.Since(start)
		start = time.Now()
		for range rounds {
			for _, f := range frames {
				if err := indigoVerified(ctx, dir, f); err != nil {
					b.Fatal(err)
				}
			}
		}
		theirs += time.Since(start)
	}
	n := float64(b.N * rounds * len(frames))
	b.ReportMetric(n/ours.Seconds(), "ours-verified-frames/s")
	b.ReportMetric(n/theirs.Seconds(), "indigo-verified-frames/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ratio")
}

func mustDID(s string) syntax.DID { return syntax.DID(s) }
