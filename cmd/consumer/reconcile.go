package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/projector"
	"github.com/spaces-authz/spaces-authz/spice"
)

// exitDrift is the exit code of reconcile when drift is found.
const exitDrift = 3

func cmdReconcile(ctx context.Context, args []string) error {
	var c common
	var admin adminFlags
	var did, httpAddr string
	var fix bool
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	c.register(fs, "text")
	fs.StringVar(&did, "did", "", "reconcile one repo (default: every repo the PDS lists and the view knows)")
	fs.BoolVar(&fix, "fix", false, "repair the drift: resync the drifting repos (through the running daemon, or under the lease)")
	fs.StringVar(&httpAddr, "http-addr", "127.0.0.1:9464", "the running daemon's HTTP address (used by --fix)")
	admin.register(fs, "the running daemon's admin API address, when it has its own (used by --fix; default: --http-addr)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if admin.addr == "" {
		admin.addr = httpAddr
	}
	if err := c.validate(true); err != nil {
		return err
	}
	if did != "" && !strings.HasPrefix(did, "did:") {
		return usageError(fmt.Errorf("--did %q: want a DID, e.g. did:plc:abc123", did))
	}
	if fix {
		if _, err := admin.token(); err != nil {
			return err
		}
	}
	rules, err := c.rules()
	if err != nil {
		return err
	}
	client, err := c.dial()
	if err != nil {
		return err
	}
	defer client.Close()
	if err := c.checkProjector(ctx, client); err != nil {
		return err
	}
	fetcher, err := c.fetcher()
	if err != nil {
		return err
	}
	r := &projector.Reconciler{Rules: rules, Store: spice.NewStore(client), Fetcher: fetcher, Source: c.name}
	dids := []string{did}
	if did == "" {
		if dids, err = r.Repos(ctx); err != nil {
			return err
		}
	}
	prog := newProgress(os.Stderr, stderrIsTerminal(), "reconcile")
	drifting, reports, err := reconcileAll(ctx, r, dids, prog.Update)
	prog.Finish()
	if err != nil {
		return err
	}
	printDrift(os.Stdout, reports, len(dids))
	if len(drifting) == 0 {
		return nil
	}
	if !fix {
		return &exitError{code: exitDrift}
	}
	if err := repair(ctx, c, admin, drifting); err != nil {
		return err
	}
	fmt.Printf("\nresynced %d repos; checking again\n", len(drifting))
	again, reports, err := reconcileAll(ctx, r, drifting, nil)
	if err != nil {
		return err
	}
	printDrift(os.Stdout, reports, len(drifting))
	if len(again) > 0 {
		return &exitError{code: exitDrift, err: fmt.Errorf("%d repos still drift after --fix", len(again))}
	}
	return nil
}

// reconcileAll checks dids; step, when not nil, learns how many are done.
func reconcileAll(ctx context.Context, r *projector.Reconciler, dids []string, step func(done, total int)) (
	[]string, []projector.Report, error) {
	var drifting []string
	var reports []projector.Report
	for i, d := range dids {
		if step != nil {
			step(i, len(dids))
		}
		rep, err := r.Check(ctx, d)
		if err != nil {
			return nil, nil, err
		}
		if len(rep.Drift) > 0 {
			drifting = append(drifting, d)
			reports = append(reports, rep)
		}
	}
	if step != nil {
		step(len(dids), len(dids))
	}
	return drifting, reports, nil
}

func printDrift(w io.Writer, reports []projector.Report, checked int) {
	if len(reports) == 0 {
		fmt.Fprintf(w, "no drift: %d repos match what their records produce\n", checked)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REPO\tKIND\tRELATIONSHIP")
	n := 0
	for _, rep := range reports {
		for _, d := range rep.Drift {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", rep.DID, d.Kind, d.Relationship)
			n++
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "drift: %d relationships in %d of %d repos\n", n, len(reports), checked)
	for _, rep := range reports {
		if rep.Unreadable > 0 {
			fmt.Fprintf(w, "%s: %d records named by the repo had no block in its export (not counted as drift)\n",
				rep.DID, rep.Unreadable)
		}
	}
}

// repair resyncs repos through the running daemon's admin API (with the
// admin token), or, when no daemon answers, by taking the lease for a
// one-shot resync.
func repair(ctx context.Context, c common, admin adminFlags, dids []string) error {
	token, err := admin.token()
	if err != nil {
		return err
	}
	err = resyncThroughDaemon(ctx, admin.addr, token, dids)
	if !errors.Is(err, errNoDaemon) {
		return err
	}
	fmt.Printf("%v: resyncing under the lease\n", err)
	log, err := c.logger()
	if err != nil {
		return err
	}
	sc, err := c.spiceConfig()
	if err != nil {
		return err
	}
	rules, err := c.rules()
	if err != nil {
		return err
	}
	dir, err := c.identity(nil)
	if err != nil {
		return err
	}
	cons, err := pipeline.New(pipeline.Config{PDSURL: c.streamURL(), Relay: c.relayConfig(), Identity: dir,
		VerifyCommits: c.relayURL != "", SpiceDB: sc, Logger: log,
		Lease: pipeline.LeaseConfig{Name: c.name, NoWait: true}, Engine: pipeline.EngineConfig{Rules: rules},
		Rebuild: pipeline.RebuildConfig{AtStart: true, DIDs: dids, ExitWhenDone: true}})
	if err != nil {
		return err
	}
	defer cons.Close()
	if err := cons.Run(ctx); err != nil {
		if errors.Is(err, spice.ErrLeaseHeld) {
			return fmt.Errorf("%w: a daemon holds the lease but doesn't answer on %s (--http-addr or --admin-addr)",
				err, admin.addr)
		}
		return err
	}
	return nil
}
