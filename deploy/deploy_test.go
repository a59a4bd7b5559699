package deploy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spaces-authz/spaces-authz/projector"
)

func TestRulesMatchProjectorDefault(t *testing.T) {
	if !bytes.Equal(Rules, projector.DefaultRulesYAML()) {
		t.Fatal("deploy/rules.yaml differs from projector/rules.default.yaml: copy one over the other")
	}
}

func TestSchemaDefinesEverythingTheProjectorWrites(t *testing.T) {
	for _, def := range []string{projector.TypeAcct, projector.TypeSpace, projector.TypeGroup, projector.TypeLineage,
		projector.TypeRecord, projector.TypeRepo, projector.TypeRev, projector.TypeStatus, projector.TypeProjector,
		projector.TypeConsumer, projector.TypeHeartbeat, projector.TypeCursor, projector.TypeSeq} {
		if !strings.Contains(Schema, "definition "+def+" {") {
			t.Errorf("schema has no definition %q", def)
		}
	}
}
