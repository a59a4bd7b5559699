package spice

import (
	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/spaces-authz/spaces-authz/view"
)

// ToV1 converts a projector tuple to the API's relationship.
func ToV1(t view.Tuple) *v1.Relationship {
	return &v1.Relationship{
		Resource: &v1.ObjectReference{ObjectType: t.ResourceType, ObjectId: t.ResourceID},
		Relation: t.Relation,
		Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: t.SubjectType, ObjectId: t.SubjectID},
			OptionalRelation: t.SubjectRelation},
	}
}

// FromV1 converts an API relationship to a projector tuple.
func FromV1(r *v1.Relationship) view.Tuple {
	return view.Tuple{
		ResourceType:    r.GetResource().GetObjectType(),
		ResourceID:      r.GetResource().GetObjectId(),
		Relation:        r.GetRelation(),
		SubjectType:     r.GetSubject().GetObject().GetObjectType(),
		SubjectID:       r.GetSubject().GetObject().GetObjectId(),
		SubjectRelation: r.GetSubject().GetOptionalRelation(),
	}
}

func toV1Updates(us []view.Update) []*v1.RelationshipUpdate {
	out := make([]*v1.RelationshipUpdate, len(us))
	for i, u := range us {
		op := v1.RelationshipUpdate_OPERATION_TOUCH
		if u.Op == view.OpDelete {
			op = v1.RelationshipUpdate_OPERATION_DELETE
		}
		out[i] = &v1.RelationshipUpdate{Operation: op, Relationship: ToV1(u.Tuple)}
	}
	return out
}
