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

// requiredRelations are relations later versions added to bookkeeping
// definitions: a schema written by an older version lacks them.
var requiredRelations = [][2]string{
	{view.TypeRepo, view.RelSource}, {view.TypeRepo, view.RelDesync}, {view.TypeRepo, view.RelIncomplete},
	{view.TypeRepo, view.RelClaim},
	{view.TypeProjector, view.RelEpoch},
}

// CheckSchema fails with ErrSchema when SpiceDB's schema lacks a definition
// or relation the projector writes (an empty schema lacks them all).
func (c *Client) CheckSchema(ctx context.Context) error {
	s, err := c.ReadSchema(ctx)
	if err != nil {
		return err
	}
	if missing := missingDefinitions(s); len(missing) > 0 {
		return fmt.Errorf("%w: definition %q is missing", ErrSchema, missing[0])
	}
	for _, dr := range requiredRelations {
		if !strings.Contains(definitionBody(s, dr[0]), "relation "+dr[1]+":") {
			return fmt.Errorf("%w: definition %q lacks relation %q (written by an older version)", ErrSchema, dr[0], dr[1])
		}
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

// definitionBody is the text between `definition name {` and its closing
// brace ("" when absent). Bookkeeping definitions hold no nested braces.
func definitionBody(schema, name string) string {
	_, rest, ok := strings.Cut(schema, "definition "+name+" {")
	if !ok {
		return ""
	}
	body, _, _ := strings.Cut(rest, "}")
	return body
}
