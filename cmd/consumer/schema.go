package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spaces-authz/spaces-authz/deploy"
	"github.com/spaces-authz/spaces-authz/spice"
)

const schemaUsage = `usage: consumer schema apply [--dry-run] [--schema-file FILE]
       consumer schema remove-unprefixed [--dry-run] [--force]

apply              merge the project's definitions (under --schema-prefix) into
                   SpiceDB's schema; every other definition is kept as it is
remove-unprefixed  after upgrading from a version without the prefix: delete the
                   old unprefixed definitions and their relationships`

func cmdSchema(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Println(schemaUsage)
		return nil
	}
	if len(args) == 0 {
		return &exitError{code: 2, err: errors.New("a subcommand is required\n" + schemaUsage)}
	}
	switch args[0] {
	case "apply":
		return withCmd("schema apply", cmdSchemaApply(ctx, args[1:], os.Stdout))
	case "remove-unprefixed":
		return withCmd("schema remove-unprefixed", cmdSchemaRemoveUnprefixed(ctx, args[1:], os.Stdout))
	}
	return &exitError{code: 2, err: fmt.Errorf("unknown subcommand %q\n%s", args[0], schemaUsage)}
}

// cmdSchemaApply merges the project's schema into SpiceDB's: it prints what
// changes under the prefix, then writes it (not with --dry-run). Another
// application's definitions are kept byte for byte; a merge that would break
// one is refused (exit 1) before anything is written.
func cmdSchemaApply(ctx context.Context, args []string, out io.Writer) error {
	var c common
	var file string
	var dryRun bool
	fs := flag.NewFlagSet("schema apply", flag.ContinueOnError)
	c.register(fs, "text")
	fs.StringVar(&file, "schema-file", "", "schema template to merge, in unprefixed names (default: the built-in deploy/spicedb/schema.zed)")
	fs.BoolVar(&dryRun, "dry-run", false, "print what would change and write nothing")
	if err := parse(fs, args); err != nil {
		return err
	}
	template := deploy.Schema
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("read --schema-file: %w", err)}
		}
		template = string(b)
	}
	client, err := c.dial()
	if err != nil {
		return err
	}
	defer client.Close()
	plan, err := client.PlanApply(ctx, template)
	if err != nil {
		return err
	}
	where := describeNamespace(client.Namespace())
	if len(plan.Changes) == 0 {
		fmt.Fprintf(out, "schema up to date: %s on %s; nothing to write (%d other definitions kept)\n",
			where, c.spiceEndpoint, len(plan.Kept))
		return nil
	}
	fmt.Fprintf(out, "schema changes (%s on %s):\n%s", where, c.spiceEndpoint, plan.Diff())
	if len(plan.Kept) > 0 {
		fmt.Fprintf(out, "kept as they are: %s\n", strings.Join(plan.Kept, ", "))
	}
	if dryRun {
		fmt.Fprintln(out, "dry run: nothing written")
		return nil
	}
	if err := client.WritePlan(ctx, plan); err != nil {
		return err
	}
	fmt.Fprintf(out, "schema written: %d change(s)\n", len(plan.Changes))
	return nil
}

func describeNamespace(ns spice.Namespace) string {
	if ns.Prefix() == "" {
		return "the unprefixed definitions"
	}
	return "definitions under " + ns.Prefix() + "/"
}

// cmdSchemaRemoveUnprefixed is the last step of the upgrade from a version
// without the prefix (DESIGN §3, PRODUCTION.md): once every projector has
// rebuilt its view under the prefix, it deletes the unprefixed definitions
// and every relationship they hold.
func cmdSchemaRemoveUnprefixed(ctx context.Context, args []string, out io.Writer) error {
	var c common
	var dryRun, force bool
	fs := flag.NewFlagSet("schema remove-unprefixed", flag.ContinueOnError)
	c.register(fs, "text")
	fs.BoolVar(&dryRun, "dry-run", false, "print what would be removed and remove nothing")
	fs.BoolVar(&force, "force", false, "remove even if a projector has no cursor under the prefix yet (its view was not rebuilt)")
	if err := parse(fs, args); err != nil {
		return err
	}
	client, err := c.dial()
	if err != nil {
		return err
	}
	defer client.Close()
	if client.Namespace().Prefix() == "" {
		return &exitError{code: 2, err: errors.New("--schema-prefix is empty: the unprefixed definitions are the ones in use")}
	}
	plan, err := client.PlanRemoveLegacy(ctx, deploy.Schema)
	if err != nil {
		return err
	}
	if len(plan.Definitions) == 0 {
		fmt.Fprintln(out, "no unprefixed definitions of this project are left: nothing to do")
		return nil
	}
	fmt.Fprintf(out, "unprefixed definitions to remove: %s\n", strings.Join(plan.Definitions, ", "))
	if len(plan.NotRebuilt) > 0 {
		msg := fmt.Sprintf("projector(s) %s of the old names have not rebuilt their view under %s/ yet: "+
			"run the new version (its first run rebuilds) before removing the old view", strings.Join(plan.NotRebuilt, ", "),
			client.Namespace().Prefix())
		if !force {
			return &exitError{code: 1, err: errors.New(msg + " (or --force)")}
		}
		fmt.Fprintln(out, "warning: "+msg)
	}
	if plan.Conflict != nil {
		return plan.Conflict
	}
	if dryRun {
		fmt.Fprintln(out, "dry run: nothing removed")
		return nil
	}
	n, err := client.RemoveLegacy(ctx, plan)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "removed %d relationships and %d definitions\n", n, len(plan.Definitions))
	return nil
}

// withCmd names the subcommand an error comes from ("schema apply"), so
// report prints it and points to its --help, not to the parent's.
func withCmd(cmd string, err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.cmd == "" {
			ee.cmd = cmd
		}
		return err
	}
	return &exitError{code: 1, err: err, cmd: cmd}
}
