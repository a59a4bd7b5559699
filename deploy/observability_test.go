package deploy

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/spice"
)

// exported lists every metric family the consumer exports.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c, err := pipeline.New(pipeline.Config{PDSURL: "http://127.0.0.1:1", Registry: reg,
		SpiceDB: spice.Config{Endpoint: "127.0.0.1:1", Token: "x", Insecure: true},
		NATS:    &fanout.Config{URL: "nats://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		out[mf.GetName()] = true
	}
	if problems, err := promlint.NewWithMetricFamilies(mfs).Lint(); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
	return out
}

var metricRE = regexp.MustCompile(`\b(consumer_[a-z_]+|process_[a-z_]+|go_[a-z_]+)\b`)

func checkReferences(t *testing.T, what, text string, have map[string]bool) {
	t.Helper()
	n := 0
	for _, m := range metricRE.FindAllString(text, -1) {
		base := m
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(m, suffix) && !have[m] {
				base = strings.TrimSuffix(m, suffix)
			}
		}
		if !have[base] {
			t.Errorf("%s uses %s, which the consumer does not export", what, m)
		}
		n++
	}
	if n == 0 {
		t.Errorf("%s references no metric", what)
	}
}

func TestAlertRulesUseExportedMetrics(t *testing.T) {
	have := exported(t)
	ds := docs(t, "prometheus/alerts.yaml")
	groups, _ := ds[0]["groups"].([]any)
	if len(groups) == 0 {
		t.Fatal("no rule groups")
	}
	names := map[string]bool{}
	for _, g := range groups {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			rule := r.(map[string]any)
			name, _ := rule["alert"].(string)
			expr, _ := rule["expr"].(string)
			if name == "" || expr == "" {
				t.Fatalf("rule without alert or expr: %v", rule)
			}
			names[name] = true
			checkReferences(t, "alert "+name, expr, have)
		}
	}
	for _, want := range []string{"SpacesAuthzLagHigh", "SpacesAuthzRejectRateHigh", "SpacesAuthzFenced", "SpacesAuthzNoEvents"} {
		if !names[want] {
			t.Errorf("no %s alert", want)
		}
	}
}

func TestDashboardUsesExportedMetrics(t *testing.T) {
	have := exported(t)
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(mustRead(t, "grafana/consumer-dashboard.json"), &dash); err != nil {
		t.Fatal(err)
	}
	if len(dash.Panels) < 10 {
		t.Fatalf("%d panels", len(dash.Panels))
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			checkReferences(t, "panel "+p.Title, tg.Expr, have)
		}
	}
}
