package spice

import (
	"context"
	"fmt"

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
// or relation the projector writes (an empty schema lacks them all), under
// the client's namespace.
func (c *Client) CheckSchema(ctx context.Context) error {
	s, err := c.ReadSchema(ctx)
	if err != nil {
		return err
	}
	return checkSchema(s, c.ns)
}

func checkSchema(schema string, ns Namespace) error {
	items, _, err := ParseSchema(schema)
	if err != nil {
		return fmt.Errorf("%w: SpiceDB's schema could not be read: %w", ErrSchema, err)
	}
	defs := map[string]string{}
	for _, it := range items {
		if it.Kind == "definition" {
			defs[it.Name] = it.body()
		}
	}
	for _, def := range requiredDefinitions {
		if _, ok := defs[ns.Type(def)]; !ok {
			return fmt.Errorf("%w: definition %q is missing", ErrSchema, ns.Type(def))
		}
	}
	for _, dr := range requiredRelations {
		declared := false
		for _, m := range memberRe.FindAllStringSubmatch(defs[ns.Type(dr[0])], -1) {
			declared = declared || m[1] == "relation" && m[2] == dr[1]
		}
		if !declared {
			return fmt.Errorf("%w: definition %q lacks relation %q (written by an older version)", ErrSchema, ns.Type(dr[0]), dr[1])
		}
	}
	return nil
}

// hasDefinition reports whether schema defines name (false when schema
// cannot be parsed).
func hasDefinition(schema, name string) bool {
	items, _, err := ParseSchema(schema)
	if err != nil {
		return false
	}
	for _, it := range items {
		if it.Kind == "definition" && it.Name == name {
			return true
		}
	}
	return false
}
