// Package synth generates a synthetic PDS stream for benchmarks: real signed
// commits built with indigo's repo library (through internal/testrig/fakepds), in a
// realistic mix — mostly app.bsky.* records nobody projects, a few percent
// space, group and relation records, some updates and deletes — encoded as
// subscribeRepos frames and written in the capture format.
package synth

import (
	"fmt"
	"math/rand/v2"

	"github.com/spaces-authz/spaces-authz/internal/testrig/fakepds"
	"github.com/spaces-authz/spaces-authz/internal/tools/capture"
)

// SeqBase is the first seq of a synthetic stream. It is large, like a real
// relay's, so every seq encodes in 8 bytes and a replay can rewrite seqs in
// place.
const SeqBase = int64(1) << 40

// Options shape a stream.
type Options struct {
	Events    int     // frames to generate
	Accounts  int     // repos
	Seed      uint64  // reproducible
	Projected float64 // share of commits touching projected records (default 0.03)
}

// Stats counts what was generated.
type Stats struct {
	Frames, Commits, ProjectedOps, OtherOps int
}

var bskyCollections = []string{"app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow", "app.bsky.feed.repost"}

// Write generates a stream into a capture file.
func Write(path string, o Options) (Stats, error) {
	w, err := capture.Create(path)
	if err != nil {
		return Stats{}, err
	}
	st, err := Generate(o, w.Write)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return st, err
}

// Generate produces o.Events frames, calling emit for each.
func Generate(o Options, emit func(frame []byte) error) (Stats, error) {
	if o.Accounts <= 0 {
		o.Accounts = 100
	}
	if o.Projected <= 0 {
		o.Projected = 0.03
	}
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed+1))
	var st Stats
	repos := make([]*fakepds.Repo, o.Accounts)
	spaces := make([][]string, o.Accounts)
	rels := make([][]string, o.Accounts)
	others := make([][]string, o.Accounts)
	for i := range repos {
		r, err := fakepds.NewRepo(fakepds.PLCDID(fmt.Sprintf("synth-%d-%d", o.Seed, i)))
		if err != nil {
			return st, err
		}
		repos[i] = r
	}
	seq := SeqBase
	key := 0
	nextKey := func(p string) string { key++; return fmt.Sprintf("%s%d", p, key) }
	for st.Frames < o.Events {
		a := rng.IntN(o.Accounts)
		r := repos[a]
		did := r.DID()
		var ws []fakepds.Write
		if rng.Float64() < o.Projected {
			switch n := rng.IntN(10); {
			case n < 3 || len(spaces[a]) == 0:
				k := nextKey("s")
				spaces[a] = append(spaces[a], k)
				ws = append(ws, fakepds.Write{Action: "create", Collection: "com.atproto.space.space", RKey: k,
					Value: map[string]any{"$type": "com.atproto.space.space", "displayName": "s", "bubble": rng.IntN(5) == 0}})
			case n < 8:
				k := nextKey("r")
				rels[a] = append(rels[a], k)
				other := repos[rng.IntN(o.Accounts)].DID()
				ws = append(ws, fakepds.Write{Action: "create", Collection: "com.atproto.space.relation", RKey: k,
					Value: map[string]any{"$type": "com.atproto.space.relation", "resourceType": "space",
						"resource": did + "/" + spaces[a][rng.IntN(len(spaces[a]))], "permission": "viewer",
						"subjectType": "acct", "subject": other}})
			case len(rels[a]) > 0:
				i := rng.IntN(len(rels[a]))
				k := rels[a][i]
				if n == 8 {
					ws = append(ws, fakepds.Write{Action: "update", Collection: "com.atproto.space.relation", RKey: k,
						Value: map[string]any{"$type": "com.atproto.space.relation", "resourceType": "space",
							"resource": did + "/" + spaces[a][rng.IntN(len(spaces[a]))], "permission": "editor",
							"subjectType": "acct", "subject": repos[rng.IntN(o.Accounts)].DID()}})
				} else {
					rels[a] = append(rels[a][:i], rels[a][i+1:]...)
					ws = append(ws, fakepds.Write{Action: "delete", Collection: "com.atproto.space.relation", RKey: k})
				}
			default:
				k := nextKey("g")
				ws = append(ws, fakepds.Write{Action: "create", Collection: "com.atproto.space.group", RKey: k,
					Value: map[string]any{"$type": "com.atproto.space.group", "displayName": "g"}})
			}
			st.ProjectedOps += len(ws)
		} else {
			coll := bskyCollections[rng.IntN(len(bskyCollections))]
			if len(others[a]) > 20 && rng.IntN(10) == 0 {
				i := rng.IntN(len(others[a]))
				p := others[a][i]
				others[a] = append(others[a][:i], others[a][i+1:]...)
				c, k := splitPath(p)
				ws = append(ws, fakepds.Write{Action: "delete", Collection: c, RKey: k})
			} else {
				k := fmt.Sprintf("3l%011d", key+1)
				key++
				others[a] = append(others[a], coll+"/"+k)
				ws = append(ws, fakepds.Write{Action: "create", Collection: coll, RKey: k, Value: bsky(coll, rng)})
			}
			st.OtherOps += len(ws)
		}
		c, err := r.Apply(ws...)
		if err != nil {
			return st, err
		}
		f, err := fakepds.CommitFrame(c, seq, "2026-07-04T14:38:07.877Z")
		if err != nil {
			return st, err
		}
		if err := emit(f); err != nil {
			return st, err
		}
		seq++
		st.Frames++
		st.Commits++
	}
	return st, nil
}

func bsky(coll string, rng *rand.Rand) map[string]any {
	v := map[string]any{"$type": coll, "createdAt": "2026-07-04T14:38:07.877Z"}
	switch coll {
	case "app.bsky.feed.post":
		v["text"] = fmt.Sprintf("a synthetic post number %d, long enough to look like one #%d", rng.IntN(1<<30), rng.IntN(100))
		v["langs"] = []any{"en"}
	default:
		v["subject"] = map[string]any{"uri": fmt.Sprintf("at://did:plc:abc/app.bsky.feed.post/3l%011d", rng.IntN(1<<30)),
			"cid": "bafyreiftot7eltsc3f6g4qktykmbv6jcmdmhcx5osscan6jpdxkpqcmcza"}
	}
	return v
}

func splitPath(p string) (string, string) {
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			return p[:i], p[i+1:]
		}
	}
	return p, ""
}
