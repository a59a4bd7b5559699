package deploy

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/spaces-authz/spaces-authz/fanout"
	"github.com/spaces-authz/spaces-authz/internal/httpapi"
	"github.com/spaces-authz/spaces-authz/internal/pipeline"
	"github.com/spaces-authz/spaces-authz/spice"
)

// job is the scrape job the alerts and the dashboard select (scrape.yaml).
const job = "spaces-authz-consumer"

// scrapeGenerated are the series Prometheus makes itself for every target:
// used in expressions, never exported by the consumer.
var scrapeGenerated = map[string]bool{"up": true}

// exported lists every metric family the consumer exports: the registry
// the daemon serves on /metrics, built by the same constructors (pipeline,
// with NATS, and the HTTP endpoints).
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
	httpapi.NewMetrics(reg)
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

// metricRE finds metric names in an expression (string literals removed
// first): the consumer's, the Go and process collectors', stale names of
// the old consumer_ prefix (which must fail), and up.
var metricRE = regexp.MustCompile(`\b(spaces_authz_[a-z_]+|consumer_[a-z_]+|process_[a-z_]+|go_[a-z_]+|up)\b`)

var stringRE = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// jobRE finds the job matchers of an expression.
var jobRE = regexp.MustCompile(`\bjob\s*=~?\s*"([^"]*)"`)

func checkReferences(t *testing.T, what, text string, have map[string]bool) {
	t.Helper()
	n := 0
	for _, m := range metricRE.FindAllString(stringRE.ReplaceAllString(text, `""`), -1) {
		base := m
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(m, suffix) && !have[m] {
				base = strings.TrimSuffix(m, suffix)
			}
		}
		switch {
		case scrapeGenerated[base]:
			// up is only meaningful for the consumer's own job.
			if jobs := jobRE.FindAllStringSubmatch(text, -1); len(jobs) == 0 {
				t.Errorf("%s uses %s without a job=%q matcher", what, m, job)
			}
		case !have[base]:
			t.Errorf("%s uses %s, which the consumer does not export", what, m)
		}
		n++
	}
	for _, j := range jobRE.FindAllStringSubmatch(text, -1) {
		if j[1] != job {
			t.Errorf("%s selects job %q; the scrape config names the job %q", what, j[1], job)
		}
	}
	if n == 0 {
		t.Errorf("%s references no metric", what)
	}
}

// TestMetricsCarryThePrefix: every metric the consumer exports, but the Go
// and process collectors', is spaces_authz_*.
func TestMetricsCarryThePrefix(t *testing.T) {
	var names []string
	for name := range exported(t) {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !strings.HasPrefix(name, "spaces_authz_") && !strings.HasPrefix(name, "go_") &&
			!strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s lacks the spaces_authz_ prefix", name)
		}
	}
}

func TestScrapeConfigNamesTheJob(t *testing.T) {
	ds := docs(t, "prometheus/scrape.yaml")
	scs, _ := ds[0]["scrape_configs"].([]any)
	if len(scs) == 0 {
		t.Fatal("no scrape_configs")
	}
	for _, sc := range scs {
		if name, _ := sc.(map[string]any)["job_name"].(string); name != job {
			t.Errorf("scrape job %q, want %q (the alerts and the dashboard select it)", name, job)
		}
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
			labels, _ := rule["labels"].(map[string]any)
			if sev, _ := labels["severity"].(string); sev != "warning" && sev != "critical" {
				t.Errorf("alert %s: severity %q", name, sev)
			}
			ann, _ := rule["annotations"].(map[string]any)
			if s, _ := ann["summary"].(string); s == "" {
				t.Errorf("alert %s has no summary", name)
			}
			if u, _ := ann["runbook_url"].(string); !strings.Contains(u, "deploy/PRODUCTION.md#") {
				t.Errorf("alert %s: runbook_url %q does not point into deploy/PRODUCTION.md", name, u)
			}
		}
	}
	for _, want := range []string{"SpacesAuthzLagHigh", "SpacesAuthzRejectRateHigh", "SpacesAuthzFenced", "SpacesAuthzNoEvents",
		"SpacesAuthzConsumerDown", "SpacesAuthzConsumerAbsent"} {
		if !names[want] {
			t.Errorf("no %s alert", want)
		}
	}
}

// TestAlertsFireOnADeadConsumer: alerts on lag alone are silent when the
// consumer is down (no series) or was never scraped; one must fire on up
// being 0 and one on up being absent, each for a while.
func TestAlertsFireOnADeadConsumer(t *testing.T) {
	down := regexp.MustCompile(`^up\{job="` + job + `"\}\s*==\s*0$`)
	absent := regexp.MustCompile(`^absent\(up\{job="` + job + `"\}\)$`)
	var sawDown, sawAbsent bool
	for _, g := range docs(t, "prometheus/alerts.yaml")[0]["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			rule := r.(map[string]any)
			expr, _ := rule["expr"].(string)
			expr = strings.TrimSpace(expr)
			isDown, isAbsent := down.MatchString(expr), absent.MatchString(expr)
			if (isDown || isAbsent) && rule["for"] == nil {
				t.Errorf("alert %v has no for: (a restart would page)", rule["alert"])
			}
			sawDown, sawAbsent = sawDown || isDown, sawAbsent || isAbsent
		}
	}
	if !sawDown || !sawAbsent {
		t.Errorf("alerts on up == 0: %v, on absent(up): %v; want both", sawDown, sawAbsent)
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
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
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
	for _, v := range dash.Templating.List {
		if v.Type == "query" {
			checkReferences(t, "variable "+v.Name, v.Query, have)
		}
	}
}
