package deploy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spaces-authz/spaces-authz/view"
)

func TestRulesMatchProjectorDefault(t *testing.T) {
	if !bytes.Equal(Rules, view.DefaultRulesYAML()) {
		t.Fatal("deploy/rules.yaml differs from view/rules.default.yaml: copy one over the other")
	}
}

func TestSchemaDefinesEverythingTheProjectorWrites(t *testing.T) {
	for _, def := range []string{view.TypeAcct, view.TypeSpace, view.TypeGroup, view.TypeLineage,
		view.TypeRecord, view.TypeRepo, view.TypeRev, view.TypeStatus, view.TypeProjector,
		view.TypeConsumer, view.TypeHeartbeat, view.TypeCursor, view.TypeSeq} {
		if !strings.Contains(Schema, "definition "+def+" {") {
			t.Errorf("schema has no definition %q", def)
		}
	}
}
