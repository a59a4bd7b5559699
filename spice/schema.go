package spice

import (
	"context"
	"fmt"
	"strings"

	"github.com/spaces-authz/spaces-authz/view"
)

// requiredDefinitions are the definitions the projector writes: without
// any of them every write fails.
var requiredDefinitions = []string{view.TypeProjector, view.TypeLineage, view.TypeRepo, view.TypeSpace}

// CheckSchema fails with ErrSchema when SpiceDB's schema lacks a definition
// the projector writes (an empty schema lacks them all).
func (c *Client) CheckSchema(ctx context.Context) error {
	s, err := c.ReadSchema(ctx)
	if err != nil {
		return err
	}
	if missing := missingDefinitions(s); len(missing) > 0 {
		return fmt.Errorf("%w: definition %q is missing", ErrSchema, missing[0])
	}
	return nil
}

// missingDefinitions lists the required definitions that schema lacks.
func missingDefinitions(schema string) []string {
	var out []string
	for _, def := range requiredDefinitions {
		if !strings.Contains(schema, "definition "+def+" ") {
			out = append(out, def)
		}
	}
	return out
}
