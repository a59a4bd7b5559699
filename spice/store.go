package spice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/spaces-authz/spaces-authz/checkpoint"
	"github.com/spaces-authz/spaces-authz/view"
)

// pageSize is SpiceDB's maximum page for ReadRelationships.
const pageSize = 1000

// Store reads the projector's bookkeeping and data back from SpiceDB.
type Store struct {
	c *Client
}

// NewStore wraps a client.
func NewStore(c *Client) *Store { return &Store{c: c} }

// Read pages through the relationships matching filter, calling fn for each.
func (c *Client) Read(ctx context.Context, filter *v1.RelationshipFilter, token string, fn func(view.Tuple) error) error {
	var after *v1.Cursor
	for {
		n, last, err := c.readPage(ctx, filter, token, after, fn)
		if err != nil {
			return err
		}
		if n < pageSize || last == nil {
			return nil
		}
		after = last
	}
}

func (c *Client) readPage(ctx context.Context, filter *v1.RelationshipFilter, token string, after *v1.Cursor,
	fn func(view.Tuple) error) (int, *v1.Cursor, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	stream, err := c.api.ReadRelationships(ctx, &v1.ReadRelationshipsRequest{
		Consistency: Consistency(token), RelationshipFilter: c.ns.Filter(filter), OptionalLimit: pageSize, OptionalCursor: after})
	if err != nil {
		return 0, nil, wrapf(err, "read %s", filter.GetResourceType())
	}
	n := 0
	var last *v1.Cursor
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, last, nil
		}
		if err != nil {
			return n, nil, wrapf(err, "read %s", filter.GetResourceType())
		}
		n++
		last = resp.GetAfterResultCursor()
		if err := fn(c.ns.FromV1(resp.GetRelationship())); err != nil {
			return n, nil, err
		}
	}
}

// LoadRepos reads every repo:<did> relationship.
func (s *Store) LoadRepos(ctx context.Context, token string) ([]view.RepoState, error) {
	var repos view.RepoStates
	err := s.c.Read(ctx, &v1.RelationshipFilter{ResourceType: view.TypeRepo}, token, func(t view.Tuple) error {
		if err := repos.Add(t); err != nil {
			return fmt.Errorf("spice: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return repos.List(), nil
}

// LoadLineage reads a repo's lineage with one prefix read.
func (s *Store) LoadLineage(ctx context.Context, did, token string) ([]view.LineageEntry, error) {
	var out []view.LineageEntry
	filter := &v1.RelationshipFilter{ResourceType: view.TypeLineage, OptionalResourceIdPrefix: view.DIDPrefix(did)}
	err := s.c.Read(ctx, filter, token, func(t view.Tuple) error {
		en, err := view.ParseLineage(did, t)
		if err != nil {
			return fmt.Errorf("spice: %w", err)
		}
		out = append(out, en)
		return nil
	})
	return out, err
}

// LoadRepo reads one repo's bookkeeping, fully consistent when token is "".
func (s *Store) LoadRepo(ctx context.Context, did, token string) (view.RepoState, error) {
	var repos view.RepoStates
	filter := &v1.RelationshipFilter{ResourceType: view.TypeRepo, OptionalResourceId: view.RepoID(did)}
	if err := s.c.Read(ctx, filter, token, func(t view.Tuple) error {
		if err := repos.Add(t); err != nil {
			return fmt.Errorf("spice: %w", err)
		}
		return nil
	}); err != nil {
		return view.RepoState{}, err
	}
	if l := repos.List(); len(l) > 0 {
		return l[0], nil
	}
	return view.RepoState{DID: did}, nil
}

// LoadEpoch reads a source's ownership epoch (checkpoint.None when none).
func (s *Store) LoadEpoch(ctx context.Context, source, token string) (int64, error) {
	epoch := checkpoint.None
	filter := &v1.RelationshipFilter{ResourceType: view.TypeProjector, OptionalResourceId: source,
		OptionalRelation: view.RelEpoch}
	err := s.c.Read(ctx, filter, token, func(t view.Tuple) error {
		n, err := strconv.ParseInt(t.SubjectID, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("spice: projector %s: bad epoch %q", source, t.SubjectID)
		}
		epoch = max(epoch, n)
		return nil
	})
	return epoch, err
}

// LoadData reads the space and group tuples under a repo's prefix.
func (s *Store) LoadData(ctx context.Context, did, token string) ([]view.Tuple, error) {
	var out []view.Tuple
	for _, typ := range []string{view.TypeSpace, view.TypeGroup} {
		filter := &v1.RelationshipFilter{ResourceType: typ, OptionalResourceIdPrefix: view.DIDPrefix(did)}
		if err := s.c.Read(ctx, filter, token, func(t view.Tuple) error {
			out = append(out, t)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}
