package deploy

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// githubAnchor is the anchor GitHub gives a Markdown heading: lower case,
// punctuation other than - and _ dropped, spaces turned into -.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestRunbookCoversEveryAlert: every alert's runbook_url points at a
// heading of PRODUCTION.md that exists, and every in-page link of
// PRODUCTION.md resolves, so an operator paged at night lands on the entry
// for that alert.
func TestRunbookCoversEveryAlert(t *testing.T) {
	doc, err := os.ReadFile("PRODUCTION.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(string(doc), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	alerts, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	urls := regexp.MustCompile(`runbook_url: "[^"#]*/deploy/PRODUCTION\.md#([^"]+)"`).FindAllStringSubmatch(string(alerts), -1)
	if n := strings.Count(string(alerts), "- alert:"); len(urls) != n {
		t.Fatalf("%d alerts, %d runbook_urls into PRODUCTION.md", n, len(urls))
	}
	for _, u := range urls {
		if !anchors[u[1]] {
			t.Errorf("alerts.yaml: runbook_url #%s has no heading in PRODUCTION.md", u[1])
		}
	}
	for _, m := range regexp.MustCompile(`\]\(#([^)]+)\)`).FindAllStringSubmatch(string(doc), -1) {
		if !anchors[m[1]] {
			t.Errorf("PRODUCTION.md links to #%s, which is no heading", m[1])
		}
	}
	if githubAnchor("SpiceDB's datastore") != "spicedbs-datastore" || githubAnchor("Fencing: the lease (DESIGN §4)") != "fencing-the-lease-design-4" {
		t.Fatal("githubAnchor")
	}
}
