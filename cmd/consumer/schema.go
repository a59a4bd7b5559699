package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/spaces-authz/spaces-authz/deploy"
)

func cmdSchema(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Println("usage: consumer schema apply [flags]\n\nRun 'consumer schema apply --help' for its flags.")
		return nil
	}
	if len(args) == 0 || args[0] != "apply" {
		return &exitError{code: 2, err: errors.New("usage: consumer schema apply [--schema-file FILE]")}
	}
	var c common
	var file string
	fs := flag.NewFlagSet("schema apply", flag.ContinueOnError)
	c.register(fs, "text")
	fs.StringVar(&file, "schema-file", "", "schema to write (default: the built-in deploy/spicedb/schema.zed)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	schema := deploy.Schema
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("read --schema-file: %w", err)
		}
		schema = string(b)
	}
	client, err := c.dial()
	if err != nil {
		return err
	}
	defer client.Close()
	if err := client.WriteSchema(ctx, schema); err != nil {
		return err
	}
	fmt.Printf("schema written to %s (%d bytes)\n", c.spiceEndpoint, len(schema))
	return nil
}
