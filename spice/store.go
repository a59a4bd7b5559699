package spice

import (
	"context"
	"errors"
	"fmt"
	"io"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

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
		Consistency: Consistency(token), RelationshipFilter: filter, OptionalLimit: pageSize, OptionalCursor: after})
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
		if err := fn(FromV1(resp.GetRelationship())); err != nil {
			return n, nil, err
		}
	}
}

// LoadRepos reads every repo:<did> relationship.
func (s *Store) LoadRepos(ctx context.Context, token string) ([]view.RepoState, error) {
	byDID := map[string]*view.RepoState{}
	var order []string
	err := s.c.Read(ctx, &v1.RelationshipFilter{ResourceType: view.TypeRepo}, token, func(t view.Tuple) error {
		did, err := view.DecodeDID(t.ResourceID)
		if err != nil {
			return fmt.Errorf("spice: stored repo state %s: %w", t, err)
		}
		st := byDID[did]
		if st == nil {
			st = &view.RepoState{DID: did}
			byDID[did] = st
			order = append(order, did)
		}
		switch t.Relation {
		case view.RelRev:
			st.Rev = t.SubjectID
		case view.RelStatus:
			status, seq, err := view.ParseStatusID(t.SubjectID)
			if err != nil {
				return fmt.Errorf("spice: stored repo state %s: %w", t, err)
			}
			switch {
			case st.Status == "":
				st.Status, st.StatusSeq = status, seq
			case seq > st.StatusSeq:
				st.StaleStatuses = append(st.StaleStatuses, view.StatusTuple(did, st.Status, st.StatusSeq).SubjectID)
				st.Status, st.StatusSeq = status, seq
			default:
				st.StaleStatuses = append(st.StaleStatuses, t.SubjectID)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]view.RepoState, 0, len(order))
	for _, d := range order {
		out = append(out, *byDID[d])
	}
	return out, nil
}

// LoadLineage reads a repo's lineage with one prefix read.
func (s *Store) LoadLineage(ctx context.Context, did, token string) ([]view.LineageEntry, error) {
	var out []view.LineageEntry
	filter := &v1.RelationshipFilter{ResourceType: view.TypeLineage,
		OptionalResourceIdPrefix: view.DIDPrefix(did)}
	err := s.c.Read(ctx, filter, token, func(t view.Tuple) error {
		data, err := view.ParseLineageID(t.ResourceID)
		if err != nil {
			return fmt.Errorf("spice: stored lineage %s: %w", t, err)
		}
		rdid, coll, rkey, err := view.ParseRecordID(t.SubjectID)
		if err != nil {
			return fmt.Errorf("spice: stored lineage %s: %w", t, err)
		}
		if rdid != did {
			return fmt.Errorf("spice: stored lineage %s: record of %s under %s", t, rdid, did)
		}
		out = append(out, view.LineageEntry{Tuple: data, Path: coll + "/" + rkey})
		return nil
	})
	return out, err
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
