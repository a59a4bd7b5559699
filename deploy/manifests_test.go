package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spaces-authz/spaces-authz/view"
	"gopkg.in/yaml.v3"
)

// docs parses every YAML document of a file.
func docs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var out []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			out = append(out, d)
		}
	}
}

// walk calls fn for every map in v, recursively.
func walk(v any, fn func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		fn(x)
		for _, c := range x {
			walk(c, fn)
		}
	case []any:
		for _, c := range x {
			walk(c, fn)
		}
	}
}

var pinned = regexp.MustCompile(`^[a-z0-9./_-]+(:[A-Za-z0-9._-]+)?(@sha256:[a-f0-9]{64})?$`)

func checkImage(t *testing.T, where, img string) {
	t.Helper()
	name, tag, hasTag := strings.Cut(img[strings.LastIndex(img, "/")+1:], ":")
	_ = name
	if !pinned.MatchString(img) || (!hasTag && !strings.Contains(img, "@sha256:")) {
		t.Errorf("%s: image %q is not pinned to a tag or digest", where, img)
		return
	}
	if tag == "latest" || tag == "" && !strings.Contains(img, "@sha256:") {
		t.Errorf("%s: image %q uses a floating tag", where, img)
	}
}

func TestComposeFile(t *testing.T) {
	ds := docs(t, "compose.yaml")
	if len(ds) != 1 {
		t.Fatalf("compose.yaml: %d documents", len(ds))
	}
	services, _ := ds[0]["services"].(map[string]any)
	for _, want := range []string{"postgres", "spicedb-migrate", "spicedb", "nats", "pds", "schema", "consumer"} {
		if _, ok := services[want]; !ok {
			t.Errorf("compose.yaml has no %q service", want)
		}
	}
	for name, s := range services {
		svc := s.(map[string]any)
		img, _ := svc["image"].(string)
		if img == "" {
			t.Errorf("service %s has no image", name)
			continue
		}
		checkImage(t, "service "+name, img)
		if vols, ok := svc["volumes"].([]any); ok {
			for _, v := range vols {
				src := strings.Split(v.(string), ":")[0]
				if strings.HasPrefix(src, "./") {
					if _, err := os.Stat(src); err != nil {
						t.Errorf("service %s mounts %s, which does not exist", name, src)
					}
				}
			}
		}
	}
	// The migrate step runs before SpiceDB serves, and SpiceDB uses Postgres.
	sp := services["spicedb"].(map[string]any)
	if dep, _ := sp["depends_on"].(map[string]any); dep["spicedb-migrate"] == nil {
		t.Error("spicedb does not wait for spicedb-migrate")
	}
	if cmd := strings.Join(anyStrings(sp["command"]), " "); !strings.Contains(cmd, "--datastore-engine postgres") {
		t.Errorf("spicedb is not on postgres: %s", cmd)
	}
	if cmd := strings.Join(anyStrings(services["nats"].(map[string]any)["command"]), " "); !strings.Contains(cmd, "-js") {
		t.Error("nats runs without JetStream")
	}
	if strings.Contains(string(mustRead(t, "compose.yaml")), "CONSUMER_SPICEDB_TOKEN: \"") {
		t.Error("a literal SpiceDB token in compose.yaml")
	}
}

func anyStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, x := range l {
			out = append(out, x.(string))
		}
	}
	return out
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKubernetesManifests(t *testing.T) {
	files, _ := filepath.Glob("k8s/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests")
	}
	kinds := map[string]map[string]any{}
	for _, f := range files {
		for _, d := range docs(t, f) {
			kind, _ := d["kind"].(string)
			meta, _ := d["metadata"].(map[string]any)
			if kind == "" || meta["name"] == nil || d["apiVersion"] == nil {
				t.Errorf("%s: a document without kind, apiVersion or name", f)
			}
			kinds[kind+"/"+meta["name"].(string)] = d
			walk(d, func(m map[string]any) {
				if img, ok := m["image"].(string); ok {
					checkImage(t, f, img)
				}
			})
		}
	}
	dep := kinds["Deployment/spaces-authz-consumer"]
	if dep == nil {
		t.Fatal("no consumer Deployment")
	}
	var probes []string
	var tokenFromSecret bool
	walk(dep, func(m map[string]any) {
		for _, p := range []string{"readinessProbe", "livenessProbe"} {
			if pr, ok := m[p].(map[string]any); ok {
				hg, _ := pr["httpGet"].(map[string]any)
				probes = append(probes, p+"="+hg["path"].(string))
			}
		}
		if m["name"] == "CONSUMER_SPICEDB_TOKEN" && m["value"] != nil {
			t.Error("the SpiceDB token is a literal env value")
		}
		if m["secretName"] == "spaces-authz-secrets" {
			tokenFromSecret = true
		}
	})
	if strings.Join(probes, ",") != "readinessProbe=/readyz,livenessProbe=/healthz" {
		t.Errorf("probes: %v", probes)
	}
	if !tokenFromSecret {
		t.Error("the consumer does not read its secrets from the Secret")
	}
	spec := dep["spec"].(map[string]any)
	if spec["replicas"] != 1 || spec["strategy"].(map[string]any)["type"] != "Recreate" {
		t.Error("one replica with the Recreate strategy, or two consumers overlap during rollouts")
	}
	cm := kinds["ConfigMap/spaces-authz-rules"]
	if cm == nil {
		t.Fatal("no rules ConfigMap")
	}
	rules := cm["data"].(map[string]any)["rules.yaml"].(string)
	if _, err := view.ParseRules([]byte(rules)); err != nil {
		t.Fatalf("the ConfigMap's rules are invalid: %v", err)
	}
	def, _ := view.ParseRules(Rules)
	got, _ := view.ParseRules([]byte(rules))
	if !sameRules(def, got) {
		t.Error("the ConfigMap's rules differ from deploy/rules.yaml")
	}
}

func sameRules(a, b *view.Rules) bool {
	ab, _ := yaml.Marshal(a)
	bb, _ := yaml.Marshal(b)
	return bytes.Equal(ab, bb)
}

func TestProductionPageExists(t *testing.T) {
	b := string(mustRead(t, "PRODUCTION.md"))
	for _, want := range []string{"TLS", "lease", "fenc", "Sizing"} {
		if !strings.Contains(b, want) {
			t.Errorf("PRODUCTION.md says nothing about %q", want)
		}
	}
}
