// Package metrictest reads metric values from a registry in tests. It is a
// leaf: packages whose tests read their own metrics (firehose, say) don't
// pull the rest of the rig, or the daemon, into their test binary.
package metrictest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Value sums the samples of a counter or gauge family whose labels include
// the given name/value pairs; it fails the test when no series matches.
func Value(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total, found := 0.0, false
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, lp := range m.GetLabel() {
					ok = ok || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !ok {
					continue series
				}
			}
			found = true
			switch {
			case m.GetCounter() != nil:
				total += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				total += m.GetGauge().GetValue()
			}
		}
	}
	if !found {
		t.Fatalf("metric %s%v not found", name, labels)
	}
	return total
}
