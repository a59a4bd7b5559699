package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
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

// k8sObjects parses every manifest of k8s/ into kind/name → document.
func k8sObjects(t *testing.T) map[string]map[string]any {
	t.Helper()
	files, _ := filepath.Glob("k8s/*.yaml")
	out := map[string]map[string]any{}
	for _, f := range files {
		for _, d := range docs(t, f) {
			kind, _ := d["kind"].(string)
			meta, _ := d["metadata"].(map[string]any)
			name, _ := meta["name"].(string)
			out[kind+"/"+name] = d
		}
	}
	return out
}

// consumerContainer is the Deployment's consumer container.
func consumerContainer(t *testing.T, objs map[string]map[string]any) (tmpl, container map[string]any) {
	t.Helper()
	dep := objs["Deployment/spaces-authz-consumer"]
	if dep == nil {
		t.Fatal("no consumer Deployment")
	}
	tmpl = dep["spec"].(map[string]any)["template"].(map[string]any)
	for _, c := range tmpl["spec"].(map[string]any)["containers"].([]any) {
		if c.(map[string]any)["name"] == "consumer" {
			return tmpl, c.(map[string]any)
		}
	}
	t.Fatal("no consumer container")
	return nil, nil
}

// envOf is a container's literal environment.
func envOf(c map[string]any) map[string]string {
	env := map[string]string{}
	for _, e := range c["env"].([]any) {
		m := e.(map[string]any)
		if v, ok := m["value"].(string); ok {
			env[m["name"].(string)] = v
		}
	}
	return env
}

// flagValue is the argument after --name in args ("" when absent).
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// portOf is the port of an endpoint: host:port, or a URL (its scheme's
// default port when it names none).
func portOf(t *testing.T, endpoint string) int {
	t.Helper()
	defaults := map[string]int{"https": 443, "wss": 443, "http": 80, "ws": 80, "nats": 4222, "tls": 4222}
	host := endpoint
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		if u.Port() == "" {
			p, ok := defaults[u.Scheme]
			if !ok {
				t.Fatalf("%s: no default port for %q", endpoint, u.Scheme)
			}
			return p
		}
		host = u.Host
	}
	_, port, err := net.SplitHostPort(host)
	if err != nil {
		t.Fatalf("%s: %v", endpoint, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("%s: %v", endpoint, err)
	}
	return n
}

// TestKubernetesAdminAPI: the admin API listens on loopback in the pod,
// its token comes from the Secret, and the Service doesn't expose it.
func TestKubernetesAdminAPI(t *testing.T) {
	objs := k8sObjects(t)
	tmpl, c := consumerContainer(t, objs)
	env := envOf(c)
	admin := flagValue(anyStrings(c["args"]), "--admin-addr")
	if admin == "" {
		admin = env["CONSUMER_ADMIN_ADDR"]
	}
	host, port, err := net.SplitHostPort(admin)
	if err != nil || (host != "127.0.0.1" && host != "::1" && host != "localhost") {
		t.Fatalf("--admin-addr %q: the admin API must listen on loopback in the pod (%v)", admin, err)
	}
	walk(c, func(m map[string]any) {
		if m["name"] == "CONSUMER_ADMIN_TOKEN" && m["value"] != nil {
			t.Error("the admin token is a literal env value")
		}
	})
	tokenFile := env["CONSUMER_ADMIN_TOKEN_FILE"]
	if tokenFile == "" {
		t.Fatal("no CONSUMER_ADMIN_TOKEN_FILE: the admin API is off, and reconcile --fix can't reach it")
	}
	// The file is a key of the Secret, mounted where the variable says.
	mounts := map[string]string{} // volume → mount path
	for _, m := range c["volumeMounts"].([]any) {
		vm := m.(map[string]any)
		mounts[vm["name"].(string)] = vm["mountPath"].(string)
	}
	found := false
	for _, v := range tmpl["spec"].(map[string]any)["volumes"].([]any) {
		vol := v.(map[string]any)
		sec, _ := vol["secret"].(map[string]any)
		if sec == nil || sec["secretName"] != "spaces-authz-secrets" {
			continue
		}
		for _, it := range sec["items"].([]any) {
			item := it.(map[string]any)
			if path.Join(mounts[vol["name"].(string)], item["path"].(string)) == tokenFile {
				found = item["key"] == "admin-token"
			}
		}
	}
	if !found {
		t.Errorf("CONSUMER_ADMIN_TOKEN_FILE %s is not the admin-token key of spaces-authz-secrets", tokenFile)
	}
	example := objs["Secret/spaces-authz-secrets"]
	if data, _ := example["stringData"].(map[string]any); data["admin-token"] == nil {
		t.Error("secret.example.yaml has no admin-token")
	}
	svc := objs["Service/spaces-authz-consumer"]
	walk(svc, func(m map[string]any) {
		if fmt.Sprint(m["port"]) == port || fmt.Sprint(m["targetPort"]) == port {
			t.Errorf("the Service exposes the admin port %s", port)
		}
	})
}

// TestNetworkPolicy: the consumer's pods accept only their HTTP port, from
// named peers, and reach only DNS and the ports of the SpiceDB, PDS and
// NATS endpoints the Deployment configures.
func TestNetworkPolicy(t *testing.T) {
	objs := k8sObjects(t)
	tmpl, c := consumerContainer(t, objs)
	np := objs["NetworkPolicy/spaces-authz-consumer"]
	if np == nil {
		t.Fatal("no NetworkPolicy for the consumer")
	}
	spec := np["spec"].(map[string]any)
	sel := spec["podSelector"].(map[string]any)["matchLabels"].(map[string]any)
	labels := tmpl["metadata"].(map[string]any)["labels"].(map[string]any)
	if len(sel) == 0 {
		t.Fatal("the policy selects every pod of the namespace")
	}
	for k, v := range sel {
		if labels[k] != v {
			t.Fatalf("the policy's podSelector %v doesn't select the consumer's pods %v", sel, labels)
		}
	}
	if types := strings.Join(anyStrings(spec["policyTypes"]), ","); types != "Ingress,Egress" {
		t.Fatalf("policyTypes %q: want Ingress,Egress (an absent egress section allows everything)", types)
	}

	// Ingress: the HTTP port, by name or number, from named peers only.
	httpPort := ""
	for _, p := range c["ports"].([]any) {
		if pm := p.(map[string]any); pm["name"] == "http" {
			httpPort = fmt.Sprint(pm["containerPort"])
		}
	}
	ingress, _ := spec["ingress"].([]any)
	if len(ingress) == 0 {
		t.Fatal("no ingress rule: Prometheus can't scrape /metrics")
	}
	for i, r := range ingress {
		rule := r.(map[string]any)
		ports, _ := rule["ports"].([]any)
		from, _ := rule["from"].([]any)
		if len(ports) == 0 || len(from) == 0 {
			t.Errorf("ingress rule %d allows every port or every peer", i)
		}
		for _, p := range ports {
			pm := p.(map[string]any)
			if port := fmt.Sprint(pm["port"]); (port != "http" && port != httpPort) || pm["protocol"] != "TCP" {
				t.Errorf("ingress rule %d opens %v/%v, not the HTTP port", i, pm["protocol"], pm["port"])
			}
		}
		for _, f := range from {
			peer := f.(map[string]any)
			if peer["ipBlock"] != nil {
				t.Errorf("ingress rule %d admits an ipBlock", i)
			}
			if ns, ok := peer["namespaceSelector"].(map[string]any); ok && len(ns) == 0 {
				t.Errorf("ingress rule %d admits every namespace", i)
			}
		}
	}

	// Egress: exactly DNS and the configured endpoints' ports.
	env := envOf(c)
	want := map[string]bool{"UDP/53": true, "TCP/53": true}
	for _, v := range []string{"CONSUMER_SPICEDB_ENDPOINT", "CONSUMER_PDS_URL", "CONSUMER_NATS_URL"} {
		if env[v] == "" {
			t.Fatalf("the Deployment sets no %s", v)
		}
		want[fmt.Sprintf("TCP/%d", portOf(t, env[v]))] = true
	}
	got := map[string]bool{}
	for i, r := range spec["egress"].([]any) {
		rule := r.(map[string]any)
		ports, _ := rule["ports"].([]any)
		to, _ := rule["to"].([]any)
		if len(ports) == 0 || len(to) == 0 {
			t.Errorf("egress rule %d allows every port or every destination", i)
		}
		for _, p := range ports {
			pm := p.(map[string]any)
			got[fmt.Sprintf("%v/%v", pm["protocol"], pm["port"])] = true
		}
	}
	for p := range want {
		if !got[p] {
			t.Errorf("egress to %s is not allowed: the consumer can't reach it", p)
		}
	}
	for p := range got {
		if !want[p] {
			t.Errorf("egress to %s is allowed, but nothing the consumer needs listens there", p)
		}
	}
}

// TestConsumerHasADiskForSnapshots: getRepo CARs are spooled to $TMPDIR
// (/tmp); with a read-only root filesystem the pod needs a writable,
// disk-backed volume there (medium Memory would count against the memory
// limit the spooling exists to protect).
func TestConsumerHasADiskForSnapshots(t *testing.T) {
	tmpl, c := consumerContainer(t, k8sObjects(t))
	tmpVolume := ""
	for _, m := range c["volumeMounts"].([]any) {
		vm := m.(map[string]any)
		if vm["mountPath"] == "/tmp" && vm["readOnly"] != true {
			tmpVolume = vm["name"].(string)
		}
	}
	if env := envOf(c); env["TMPDIR"] != "" && env["TMPDIR"] != "/tmp" {
		t.Fatalf("TMPDIR=%s: the test expects snapshots in /tmp", env["TMPDIR"])
	}
	if tmpVolume == "" {
		t.Fatal("no writable volume at /tmp: every getRepo fails on a read-only root filesystem")
	}
	for _, v := range tmpl["spec"].(map[string]any)["volumes"].([]any) {
		vol := v.(map[string]any)
		if vol["name"] != tmpVolume {
			continue
		}
		ed, ok := vol["emptyDir"].(map[string]any)
		if !ok {
			t.Fatalf("volume %s at /tmp is not an emptyDir", tmpVolume)
		}
		if ed["medium"] == "Memory" {
			t.Fatal("/tmp is in memory: spooled CARs would count against the memory limit")
		}
		return
	}
	t.Fatalf("volume %s is mounted but not declared", tmpVolume)
}
