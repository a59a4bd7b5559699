//go:build e2e

package localpds_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/bluesky-social/indigo/events"
	"github.com/bluesky-social/indigo/events/schedulers/sequential"
	"github.com/gorilla/websocket"
	car "github.com/ipld/go-car"
)

// fhEvent is a firehose event, summarised.
type fhEvent struct {
	Seq    int64
	Kind   string // commit, sync, identity, account, info
	DID    string
	Rev    string   // the event's rev field (#commit, #sync)
	Since  string   // #commit
	Ops    []string // "create coll/rkey"
	Active bool
	Status string
	Handle string // #identity
	// PrevData is the #commit's prevData CID, or "".
	PrevData string
	// Time is the event's time field (when the PDS sequenced it).
	Time string
	// Commit is the signed commit block in the event's CAR (#commit, #sync),
	// CommitCID its CID (the CAR root), and Blocks the number of blocks in
	// that CAR.
	Commit    *repo.Commit
	CommitCID string
	Blocks    int
	// Records holds the decoded records of create/update ops, by path.
	Records map[string]map[string]any
}

func (e fhEvent) String() string {
	switch e.Kind {
	case "commit":
		return fmt.Sprintf("%d commit %s rev=%s ops=%v", e.Seq, e.DID, e.Rev, e.Ops)
	case "account":
		return fmt.Sprintf("%d account %s active=%v status=%s", e.Seq, e.DID, e.Active, e.Status)
	default:
		return fmt.Sprintf("%d %s %s %s", e.Seq, e.Kind, e.DID, e.Status)
	}
}

// decodeCAR sets e.Commit, e.CommitCID and e.Blocks from the CAR of a
// #commit or #sync event.
func (e *fhEvent) decodeCAR(ctx context.Context, b []byte) error {
	commit, root, err := repo.LoadCommitFromCAR(ctx, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("seq %d: commit block: %w", e.Seq, err)
	}
	cr, err := car.NewCarReader(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("seq %d: %w", e.Seq, err)
	}
	n := 0
	for {
		if _, err := cr.Next(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("seq %d: %w", e.Seq, err)
		}
		n++
	}
	e.Commit, e.CommitCID, e.Blocks = commit, root.String(), n
	return nil
}

// readFirehose subscribes to url and collects events until done returns true
// for one of them. Commits with ops are checked with repo.VerifyCommitMessage
// and their records decoded.
func readFirehose(ctx context.Context, url string, done func(fhEvent) bool) ([]fhEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	con, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	defer con.Close()
	var got []fhEvent
	var finished bool
	add := func(e fhEvent) error {
		got = append(got, e)
		if done(e) {
			finished = true
			cancel()
		}
		return nil
	}
	rsc := &events.RepoStreamCallbacks{
		RepoCommit: func(evt *comatproto.SyncSubscribeRepos_Commit) error {
			e := fhEvent{Seq: evt.Seq, Kind: "commit", DID: evt.Repo, Rev: evt.Rev, Time: evt.Time}
			if evt.Since != nil {
				e.Since = *evt.Since
			}
			if evt.PrevData != nil {
				e.PrevData = evt.PrevData.String()
			}
			if err := e.decodeCAR(ctx, evt.Blocks); err != nil {
				return err
			}
			for _, op := range evt.Ops {
				e.Ops = append(e.Ops, op.Action+" "+op.Path)
			}
			if len(evt.Ops) > 0 {
				r, err := repo.VerifyCommitMessage(ctx, evt)
				if err != nil {
					return fmt.Errorf("seq %d: verify commit: %w", evt.Seq, err)
				}
				e.Records = map[string]map[string]any{}
				for _, op := range evt.Ops {
					if op.Action == "delete" {
						continue
					}
					coll, rkey, err := syntax.ParseRepoPath(op.Path)
					if err != nil {
						return err
					}
					b, _, err := r.GetRecordBytes(ctx, coll, rkey)
					if err != nil {
						return fmt.Errorf("seq %d: record %s: %w", evt.Seq, op.Path, err)
					}
					if e.Records[op.Path], err = atdata.UnmarshalCBOR(b); err != nil {
						return fmt.Errorf("seq %d: decode %s: %w", evt.Seq, op.Path, err)
					}
				}
			}
			return add(e)
		},
		RepoSync: func(evt *comatproto.SyncSubscribeRepos_Sync) error {
			e := fhEvent{Seq: evt.Seq, Kind: "sync", DID: evt.Did, Rev: evt.Rev, Time: evt.Time}
			if err := e.decodeCAR(ctx, evt.Blocks); err != nil {
				return err
			}
			return add(e)
		},
		RepoIdentity: func(evt *comatproto.SyncSubscribeRepos_Identity) error {
			e := fhEvent{Seq: evt.Seq, Kind: "identity", DID: evt.Did, Time: evt.Time}
			if evt.Handle != nil {
				e.Handle = *evt.Handle
			}
			return add(e)
		},
		RepoAccount: func(evt *comatproto.SyncSubscribeRepos_Account) error {
			e := fhEvent{Seq: evt.Seq, Kind: "account", DID: evt.Did, Active: evt.Active, Time: evt.Time}
			if evt.Status != nil {
				e.Status = *evt.Status
			}
			return add(e)
		},
		RepoInfo: func(evt *comatproto.SyncSubscribeRepos_Info) error {
			msg := ""
			if evt.Message != nil {
				msg = *evt.Message
			}
			return add(fhEvent{Kind: "info", Status: evt.Name + ": " + msg})
		},
		Error: func(evt *events.ErrorFrame) error {
			return fmt.Errorf("error frame %s: %s", evt.Error, evt.Message)
		},
	}
	err = events.HandleRepoStream(ctx, con, sequential.NewScheduler("localpds-test", rsc.EventHandler), nil)
	if finished {
		return got, nil
	}
	return got, fmt.Errorf("firehose %s: %w (got %d events)", url, err, len(got))
}
