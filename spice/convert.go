package spice

import (
	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/spaces-authz/spaces-authz/view"
)

// ToV1 converts a tuple to the API's relationship in the client's
// namespace.
func (c *Client) ToV1(t view.Tuple) *v1.Relationship { return c.ns.ToV1(t) }

// FromV1 converts an API relationship to a tuple in the view's names.
func (c *Client) FromV1(r *v1.Relationship) view.Tuple { return c.ns.FromV1(r) }

// Namespace is the client's namespace: the prefix of the definitions it
// reads and writes.
func (c *Client) Namespace() Namespace { return c.ns }
