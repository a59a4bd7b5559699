package firehose

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/spaces-authz/spaces-authz/internal/tools/capture"
)

const corpusDir = "../testdata/relay-2026-07-04"

// corpusFrames loads the 150 real relay frames.
func corpusFrames(t testing.TB) [][]byte {
	t.Helper()
	frames, err := capture.ReadFile(filepath.Join(corpusDir, "frames.bin.zst"))
	if err != nil {
		t.Fatal(err)
	}
	return frames
}

type expectedOp struct {
	DID, Rev, Collection, RKey, Operation, CID string
	Record                                     json.RawMessage
}

func (o expectedOp) key() string {
	return strings.Join([]string{o.DID, o.Rev, o.Collection, o.RKey, o.Operation, o.CID}, " ")
}

// TestCorpusConformance decodes every real relay frame and matches each op
// against what production Jetstream emitted for the same frames.
func TestCorpusConformance(t *testing.T) {
	frames := corpusFrames(t)
	var manifest struct {
		Frames                                       int `json:"frames"`
		CommitFrames                                 int `json:"commit_frames"`
		Creates, Updates, Deletes, Identity, Account int
	}
	mb, err := os.ReadFile(filepath.Join(corpusDir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(mb, &manifest); err != nil {
		t.Fatal(err)
	}
	if len(frames) != manifest.Frames {
		t.Fatalf("%d frames, manifest says %d", len(frames), manifest.Frames)
	}

	want := map[string]expectedOp{}
	f, err := os.Open(filepath.Join(corpusDir, "expected_v1.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			DID    string `json:"did"`
			Kind   string `json:"kind"`
			Commit *struct {
				Rev        string          `json:"rev"`
				Operation  string          `json:"operation"`
				Collection string          `json:"collection"`
				RKey       string          `json:"rkey"`
				CID        string          `json:"cid"`
				Record     json.RawMessage `json:"record"`
			} `json:"commit"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		if line.Kind != "commit" {
			continue
		}
		c := line.Commit
		o := expectedOp{line.DID, c.Rev, c.Collection, c.RKey, c.Operation, c.CID, c.Record}
		want[o.key()] = o
	}

	got := map[string]Op{}
	counts := map[string]int{}
	var prevSeq int64
	for i, b := range frames {
		fr, err := DecodeFrame(b, nil)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		ev := fr.Event
		if ev == nil {
			t.Fatalf("frame %d: no event", i)
		}
		if ev.Seq <= prevSeq {
			t.Fatalf("frame %d: seq %d after %d", i, ev.Seq, prevSeq)
		}
		prevSeq = ev.Seq
		counts[ev.Kind.String()]++
		fr.DecodeRecords()
		for _, op := range ev.Ops {
			if op.Err != nil {
				t.Fatalf("seq %d %s: %v", ev.Seq, op.Path(), op.Err)
			}
			counts[string(op.Action)]++
			c := ""
			if op.Action != ActionDelete {
				c = op.CID.String()
			}
			k := strings.Join([]string{ev.DID, ev.Rev, op.Collection, op.RKey, string(op.Action), c}, " ")
			got[k] = op
		}
	}
	if counts["commit"] != manifest.CommitFrames || counts["identity"] != manifest.Identity || counts["account"] != manifest.Account {
		t.Fatalf("kinds %v, manifest: %d commits, %d identity, %d account", counts, manifest.CommitFrames, manifest.Identity, manifest.Account)
	}
	if counts["create"] != manifest.Creates || counts["update"] != manifest.Updates || counts["delete"] != manifest.Deletes {
		t.Fatalf("ops %v, manifest: %d/%d/%d", counts, manifest.Creates, manifest.Updates, manifest.Deletes)
	}
	var missing, extra []string
	for k := range want {
		if _, ok := got[k]; !ok {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing)+len(extra) > 0 {
		t.Fatalf("ops differ from Jetstream's:\nmissing %v\nextra %v", missing, extra)
	}
	// The decoded records must carry the same data Jetstream served.
	for k, w := range want {
		if w.Operation == "delete" {
			continue
		}
		gb, err := json.Marshal(got[k].Record)
		if err != nil {
			t.Fatalf("%s: marshal: %v", k, err)
		}
		if !jsonEqual(t, gb, w.Record) {
			t.Errorf("%s: record differs:\n got  %s\n want %s", k, gb, w.Record)
		}
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// TestCorpusRepoCAR reads the real getRepo export and matches its records
// and commit.
func TestCorpusRepoCAR(t *testing.T) {
	car, err := os.ReadFile(filepath.Join(corpusDir, "repo.car"))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := ReadRepoCAR(t.Context(), car, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range snap.Records {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Path(), r.Err)
		}
		if r.Value == nil {
			t.Fatalf("%s: no value", r.Path())
		}
		got = append(got, r.Path()+"\t"+r.CID.String())
	}
	wantB, err := os.ReadFile(filepath.Join(corpusDir, "car_expected_records.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSpace(string(wantB)), "\n")
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	commitB, err := os.ReadFile(filepath.Join(corpusDir, "car_expected_commit.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(commitB), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		var gotV string
		switch k {
		case "DID":
			gotV = snap.DID
		case "Data CID":
			gotV = snap.Commit.String()
		case "Revision":
			gotV = snap.Rev
		default:
			continue
		}
		if gotV != strings.TrimSpace(v) {
			t.Errorf("%s = %s, want %s", k, gotV, v)
		}
	}
	// keep filters collections
	only, err := ReadRepoCAR(t.Context(), car, func(c string) bool { return c == "app.bsky.actor.profile" })
	if err != nil {
		t.Fatal(err)
	}
	if len(only.Records) != 1 || only.Records[0].Path() != "app.bsky.actor.profile/self" {
		t.Fatalf("filtered: %v", fmt.Sprint(only.Records))
	}
}
