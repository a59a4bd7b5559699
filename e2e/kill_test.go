//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/workload"
)

// TestKillNineDuringWorkload kills the consumer process with SIGKILL at
// random moments, at least 20 times, while a randomized workload of at least
// 2,000 record operations across 5 accounts goes through the real PDS; then
// SpiceDB must hold exactly what the oracle computes from the PDS's records.
func TestKillNineDuringWorkload(t *testing.T) {
	s := newStack(t, stackOpts{})
	const accounts, minOps, minKills = 5, 2000, 20
	var sessions []localpds.Session
	var dids []string
	for i := range accounts {
		sess := s.account(fmt.Sprintf("user%d", i))
		sessions = append(sessions, sess)
		dids = append(dids, sess.DID)
	}
	seed := workload.Seed(t, "E2E_SEED") // the workload and the kill schedule
	gen := workload.New(seed, dids, workload.Options{StatusChanges: true})
	ctx := context.Background()
	status := make([]string, accounts) // "", "deactivated" or "takendown"
	var ops atomic.Int64
	apply := func(st workload.Step) error {
		sess := sessions[st.Account]
		switch st.Kind {
		case workload.KindCommit:
			var ws []localpds.Write
			for _, w := range st.Writes {
				ws = append(ws, localpds.Write{Action: w.Action, Collection: w.Collection, RKey: w.RKey, Value: w.Value})
			}
			if _, _, err := s.xrpc.ApplyWrites(ctx, sess, ws); err != nil {
				return fmt.Errorf("applyWrites %v: %w", ws, err)
			}
			ops.Add(int64(len(ws)))
		case workload.KindStatus:
			var err error
			switch {
			case !st.Active && st.Status == "takendown":
				err = s.xrpc.Takedown(ctx, s.pds.AdminPassword, sess.DID, true)
			case !st.Active:
				err = s.xrpc.DeactivateAccount(ctx, sess)
			case status[st.Account] == "takendown":
				err = s.xrpc.Takedown(ctx, s.pds.AdminPassword, sess.DID, false)
			default:
				err = s.xrpc.ActivateAccount(ctx, sess)
			}
			if err != nil {
				return fmt.Errorf("status %+v: %w", st, err)
			}
			status[st.Account] = st.Status
			if st.Active {
				status[st.Account] = ""
			}
		}
		return nil
	}
	// Records are listed for the oracle while every account is active.
	workDone := make(chan error, 1)
	go func() {
		for ops.Load() < minOps {
			if err := apply(gen.Next()); err != nil {
				workDone <- err
				return
			}
		}
		for _, st := range gen.LastWrites() {
			if err := apply(st); err != nil {
				workDone <- err
				return
			}
		}
		workDone <- nil
	}()

	rng := rand.New(rand.NewPCG(seed, 3))
	kills := 0
	var workErr error
	finished := false
	for !finished || kills < minKills {
		p := s.startConsumer()
		time.Sleep(time.Duration(50+rng.IntN(350)) * time.Millisecond)
		if !p.Running() {
			t.Fatalf("consumer exited on its own:\n%s", tail(p.Output(), 3000))
		}
		p.Kill()
		kills++
		select {
		case workErr = <-workDone:
			finished = true
		default:
		}
		if workErr != nil {
			t.Fatal(workErr)
		}
		if kills > 200 {
			t.Fatal(errors.New("workload did not finish"))
		}
	}
	s.startConsumer()
	n, took := s.waitOracle(3 * time.Minute)
	head := s.relationships("projector")
	t.Logf("kills: %d; record operations: %d across %d accounts; %d relationships compared with the oracle, 0 mismatches "+
		"(caught up %v after the last kill); projector state %v", kills, ops.Load(), accounts, n, took, head)
}
