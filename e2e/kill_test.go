//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/internal/testrig/localpds"
	"github.com/spaces-authz/spaces-authz/internal/testrig/workload"
)

// TestKillNineDuringWorkload kills the consumer process with SIGKILL at
// random moments while a randomized workload of record operations across 5
// accounts goes through the real PDS; then SpiceDB must hold exactly what
// the oracle computes from the PDS's records. On the memory datastore: at
// least 2,000 operations and 20 kills; on PostgreSQL (slower writes, the
// same assertions): 1,000 and 10.
func TestKillNineDuringWorkload(t *testing.T) {
	for _, c := range []struct {
		o        stackOpts
		minOps   int64
		minKills int
	}{
		{stackOpts{}, 2000, 20},
		{stackOpts{postgres: true}, 1000, 10},
	} {
		t.Run(c.o.datastore(), func(t *testing.T) { killNineDuringWorkload(t, c.o, c.minOps, c.minKills) })
	}
}

func killNineDuringWorkload(t *testing.T, o stackOpts, minOps int64, minKills int) {
	s := newStack(t, o)
	const accounts = 5
	seed := workload.Seed(t, "E2E_SEED") // the workload and the kill schedule
	d := s.newDriver("user", accounts, seed, workload.Options{StatusChanges: true})
	// Records are listed for the oracle while every account is active.
	workDone := make(chan error, 1)
	go func() { workDone <- d.run(context.Background(), minOps) }()

	rng := rand.New(rand.NewPCG(seed, 3))
	// A bound on the time, not on the kills: how many kills fit in the
	// workload depends on how fast the PDS takes it on a shared machine.
	deadline := time.Now().Add(10 * time.Minute)
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
		if time.Now().After(deadline) {
			t.Fatalf("the workload did not finish in 10 minutes: %d record operations, %d kills", d.ops.Load(), kills)
		}
	}
	s.startConsumer()
	n, took := s.waitOracle(3 * time.Minute)
	head := s.relationships("projector")
	t.Logf("kills: %d; record operations: %d across %d accounts; %d relationships compared with the oracle, 0 mismatches "+
		"(caught up %v after the last kill); projector state %v", kills, d.ops.Load(), accounts, n, took, head)
}

// driver writes a randomized workload's steps through the real PDS, from
// any goroutine (it reports errors instead of failing the test).
type driver struct {
	s        *stack
	sessions []localpds.Session
	// on is the stack (PDS) of each account when they span several (nil:
	// every account is on s).
	on     []*stack
	gen    *workload.Generator
	status []string // per account: "", "deactivated" or "takendown"
	ops    atomic.Int64

	mu   sync.Mutex
	revs []string // per account: the rev of its last commit
}

// newDriver creates accounts <prefix>0… and a workload over them.
func (s *stack) newDriver(prefix string, accounts int, seed uint64, o workload.Options) *driver {
	s.t.Helper()
	d := &driver{s: s, status: make([]string, accounts), revs: make([]string, accounts)}
	var dids []string
	for i := range accounts {
		sess := s.account(fmt.Sprintf("%s%d", prefix, i))
		d.sessions = append(d.sessions, sess)
		dids = append(dids, sess.DID)
	}
	d.gen = workload.New(seed, dids, o)
	return d
}

// apply writes one step: a commit (applyWrites) or an account status change.
func (d *driver) apply(ctx context.Context, st workload.Step) error {
	s, sess := d.s, d.sessions[st.Account]
	if d.on != nil {
		s = d.on[st.Account]
	}
	switch st.Kind {
	case workload.KindCommit:
		var ws []localpds.Write
		for _, w := range st.Writes {
			ws = append(ws, localpds.Write{Action: w.Action, Collection: w.Collection, RKey: w.RKey, Value: w.Value})
		}
		rev, _, err := s.xrpc.ApplyWrites(ctx, sess, ws)
		if err != nil {
			return fmt.Errorf("applyWrites %v: %w", ws, err)
		}
		d.ops.Add(int64(len(ws)))
		d.mu.Lock()
		d.revs[st.Account] = rev
		d.mu.Unlock()
	case workload.KindStatus:
		var err error
		switch {
		case !st.Active && st.Status == "takendown":
			err = s.xrpc.Takedown(ctx, s.pds.AdminPassword, sess.DID, true)
		case !st.Active:
			err = s.xrpc.DeactivateAccount(ctx, sess)
		case d.status[st.Account] == "takendown":
			err = s.xrpc.Takedown(ctx, s.pds.AdminPassword, sess.DID, false)
		default:
			err = s.xrpc.ActivateAccount(ctx, sess)
		}
		if err != nil {
			return fmt.Errorf("status %+v: %w", st, err)
		}
		d.status[st.Account] = st.Status
		if st.Active {
			d.status[st.Account] = ""
		}
	}
	return nil
}

// until writes steps until at least ops record operations are written.
func (d *driver) until(ctx context.Context, ops int64) error {
	for d.ops.Load() < ops {
		if err := d.apply(ctx, d.gen.Next()); err != nil {
			return err
		}
	}
	return nil
}

// finish writes the generator's last steps: every account active again and
// one more commit each, so the stream carries the end state.
func (d *driver) finish(ctx context.Context) error {
	for _, st := range d.gen.LastWrites() {
		if err := d.apply(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

// run is until(ops), then finish.
func (d *driver) run(ctx context.Context, ops int64) error {
	if err := d.until(ctx, ops); err != nil {
		return err
	}
	return d.finish(ctx)
}

// confirmLastRevs asks the consumer's /v1/consistency for every account's
// last commit rev: it answers once that commit (so every earlier one of the
// repo) is applied.
func (d *driver) confirmLastRevs() {
	d.s.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, rev := range d.revs {
		if rev == "" {
			continue
		}
		if _, err := d.s.consistent(d.sessions[i].DID, rev); err != nil {
			d.s.t.Fatalf("%s's last commit %s is not applied: %v", d.sessions[i].Handle, rev, err)
		}
	}
}
