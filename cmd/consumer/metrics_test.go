package main

import (
	"strings"
	"testing"

	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/spice"
)

// TestEveryMetricCarriesThePrefix walks what the daemon's registry gathers
// (built as `run` builds it: newRegistry, the pipeline with NATS, the HTTP
// endpoints) and finds every family but the Go and process collectors'
// named spaces_authz_*.
func TestEveryMetricCarriesThePrefix(t *testing.T) {
	reg := newRegistry()
	c, err := pipeline.New(pipeline.Config{PDSURL: "http://127.0.0.1:1", Registry: reg,
		SpiceDB: spice.Config{Endpoint: "127.0.0.1:1", Token: "x", Insecure: true},
		NATS:    &fanout.Config{URL: "nats://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	httpapi.NewMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ours := 0
	for _, mf := range mfs {
		switch name := mf.GetName(); {
		case strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"):
		case strings.HasPrefix(name, "spaces_authz_"):
			ours++
		default:
			t.Errorf("metric %s lacks the spaces_authz_ prefix", name)
		}
	}
	if ours < 40 {
		t.Errorf("only %d spaces_authz_ metrics gathered", ours)
	}
}
