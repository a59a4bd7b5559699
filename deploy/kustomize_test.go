package deploy

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/spaces-authz/spaces-authz/view"
)

var update = flag.Bool("update", false, "rewrite deploy/k8s's copies of deploy/rules.yaml and deploy/prometheus/alerts.yaml")

const (
	componentDir  = "k8s/components/prometheus-operator"
	prometheusYML = componentDir + "/prometheusrule.yaml"
	consumerName  = "spaces-authz-consumer"
)

// object is one rendered resource.
type object struct {
	Kind, Name, Namespace string
	JSON                  []byte
}

// kustomization is a kustomization this repository ships, rendered.
type kustomization struct {
	name string
	objs []object
}

var (
	renderMu    sync.Mutex
	renderCache = map[string][]object{}
)

// kustomize renders a kustomization directory as `kubectl kustomize dir`
// does, with kustomize's own library.
func kustomize(dir string) ([]object, error) {
	renderMu.Lock()
	defer renderMu.Unlock()
	if objs, ok := renderCache[dir]; ok {
		return objs, nil
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var objs []object
	for _, r := range m.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: %s/%s: %w", dir, r.GetKind(), r.GetName(), err)
		}
		objs = append(objs, object{Kind: r.GetKind(), Name: r.GetName(), Namespace: r.GetNamespace(), JSON: b})
	}
	renderCache[dir] = objs
	return objs, nil
}

// withComponent writes a kustomization that adds the Prometheus operator
// component to the base, as an overlay would.
func withComponent(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rel := func(p string) string {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		r, err := filepath.Rel(dir, abs)
		if err != nil {
			t.Fatal(err)
		}
		return filepath.ToSlash(r)
	}
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n  - %s\n",
		rel("k8s/base"), rel(componentDir))
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// shipped renders every kustomization of deploy/k8s: the base, each overlay
// and the base with each component.
func shipped(t *testing.T) []kustomization {
	t.Helper()
	dirs := map[string]string{ // name → directory
		"k8s":                           "k8s",
		"base":                          "k8s/base",
		"overlays/example":              "k8s/overlays/example",
		"base+components/prom-operator": withComponent(t),
	}
	names := []string{"k8s", "base", "overlays/example", "base+components/prom-operator"}
	// A new kustomization under k8s/ must be added above.
	err := filepath.WalkDir("k8s", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "kustomization.yaml" {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(p))
		covered := dir == componentDir
		for _, name := range names {
			covered = covered || dirs[name] == dir
		}
		if !covered {
			t.Errorf("%s is not rendered by the tests: add it to shipped()", dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []kustomization
	for _, name := range names {
		objs, err := kustomize(dirs[name])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, kustomization{name: name, objs: objs})
	}
	return out
}

func base(t *testing.T) kustomization {
	t.Helper()
	objs, err := kustomize("k8s")
	if err != nil {
		t.Fatal(err)
	}
	return kustomization{name: "base", objs: objs}
}

// decodeStrict decodes a rendered object into a typed API struct, refusing
// unknown fields (a misspelt securityContext field would pass unseen).
func decodeStrict(t *testing.T, o object, into any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(o.JSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		t.Fatalf("%s/%s: %v", o.Kind, o.Name, err)
	}
}

func (k kustomization) find(kind, name string) (object, bool) {
	for _, o := range k.objs {
		if o.Kind == kind && o.Name == name {
			return o, true
		}
	}
	return object{}, false
}

func (k kustomization) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	o, ok := k.find("Deployment", consumerName)
	if !ok {
		t.Fatalf("%s: no Deployment %s", k.name, consumerName)
	}
	var d appsv1.Deployment
	decodeStrict(t, o, &d)
	return &d
}

// container is the named container or init container of a pod spec.
func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for _, list := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// literalEnv is a container's literal environment.
func literalEnv(c *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

// podSpecs decodes every workload's pod spec; any kind the test doesn't know
// is an error, so that a new workload can't escape the checks.
func podSpecs(t *testing.T, k kustomization) map[string]*corev1.PodSpec {
	t.Helper()
	out := map[string]*corev1.PodSpec{}
	for _, o := range k.objs {
		where := k.name + ": " + o.Kind + "/" + o.Name
		switch o.Kind {
		case "Deployment":
			var d appsv1.Deployment
			decodeStrict(t, o, &d)
			out[where] = &d.Spec.Template.Spec
		case "StatefulSet":
			var s appsv1.StatefulSet
			decodeStrict(t, o, &s)
			out[where] = &s.Spec.Template.Spec
		case "DaemonSet":
			var d appsv1.DaemonSet
			decodeStrict(t, o, &d)
			out[where] = &d.Spec.Template.Spec
		case "Job":
			var j batchv1.Job
			decodeStrict(t, o, &j)
			out[where] = &j.Spec.Template.Spec
		case "CronJob":
			var j batchv1.CronJob
			decodeStrict(t, o, &j)
			out[where] = &j.Spec.JobTemplate.Spec.Template.Spec
		case "Pod":
			var p corev1.Pod
			decodeStrict(t, o, &p)
			out[where] = &p.Spec
		case "ConfigMap", "Secret", "Service", "ServiceAccount", "NetworkPolicy", "Namespace",
			"ServiceMonitor", "PrometheusRule":
		default:
			t.Errorf("%s: a kind the tests don't check: teach podSpecs about it", where)
		}
	}
	return out
}

// TestKustomizationsRender renders every shipped kustomization and checks
// every pod spec against the restricted profile, and what each adds.
func TestKustomizationsRender(t *testing.T) {
	for _, k := range shipped(t) {
		t.Run(k.name, func(t *testing.T) {
			specs := podSpecs(t, k)
			if len(specs) == 0 {
				t.Fatal("no workload")
			}
			for where, spec := range specs {
				for _, v := range restrictedViolations(spec) {
					t.Errorf("%s: %s", where, v)
				}
				for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
					checkImage(t, where+" container "+c.Name, c.Image)
				}
			}
			counts := map[string]int{}
			for _, o := range k.objs {
				counts[o.Kind]++
			}
			t.Logf("%s renders %d resources: %v", k.name, len(k.objs), counts)
			if counts["Job"] > 0 {
				t.Error("a Job: the schema step is the Deployment's init container")
			}
			for _, kind := range []string{"Deployment", "Service", "ServiceAccount", "NetworkPolicy", "ConfigMap"} {
				if counts[kind] != 1 {
					t.Errorf("%d %s, want 1", counts[kind], kind)
				}
			}
			secrets, monitors := counts["Secret"] > 0, counts["ServiceMonitor"]+counts["PrometheusRule"]
			switch k.name {
			case "k8s", "base":
				if secrets {
					t.Error("the base holds a Secret: kubectl apply -k would overwrite the real one")
				}
				if monitors != 0 {
					t.Error("the base needs the Prometheus operator's CRDs")
				}
			case "overlays/example":
				if !secrets {
					t.Error("the example overlay has no example Secret")
				}
			case "base+components/prom-operator":
				if counts["ServiceMonitor"] != 1 || counts["PrometheusRule"] != 1 {
					t.Errorf("the component adds %v, want a ServiceMonitor and a PrometheusRule", counts)
				}
			}
		})
	}
}

// dockerfileUser is the numeric USER uid:gid of deploy/Dockerfile.
func dockerfileUser(t *testing.T) (uid, gid int64) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^USER\s+(\S+)\s*$`).FindAllStringSubmatch(string(mustRead(t, "Dockerfile")), -1)
	if len(m) != 1 {
		t.Fatalf("the Dockerfile has %d USER lines, want 1", len(m))
	}
	u, g, _ := strings.Cut(m[0][1], ":")
	uid, err1 := strconv.ParseInt(u, 10, 64)
	gid, err2 := strconv.ParseInt(g, 10, 64)
	if err1 != nil || err2 != nil || uid == 0 {
		t.Fatalf("USER %s: want a numeric non-root uid:gid, or the kubelet can't verify runAsNonRoot", m[0][1])
	}
	return uid, gid
}

// TestConsumerDeployment: one replica, probes, resources, the image's
// numeric user, no service account token, secrets from the Secret, and the
// schema init container.
func TestConsumerDeployment(t *testing.T) {
	uid, gid := dockerfileUser(t)
	for _, k := range shipped(t) {
		t.Run(k.name, func(t *testing.T) {
			d := k.deployment(t)
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
				t.Error("one replica with the Recreate strategy, or two consumers overlap during rollouts")
			}
			spec := &d.Spec.Template.Spec
			psc := spec.SecurityContext
			if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != uid || psc.RunAsGroup == nil || *psc.RunAsGroup != gid ||
				psc.FSGroup == nil || *psc.FSGroup != gid {
				t.Errorf("the pod's runAsUser/runAsGroup/fsGroup are not the Dockerfile's USER %d:%d", uid, gid)
			}
			sa, ok := k.find("ServiceAccount", spec.ServiceAccountName)
			if spec.ServiceAccountName == "" || !ok {
				t.Fatalf("the pod's service account %q is not rendered", spec.ServiceAccountName)
			}
			var acct corev1.ServiceAccount
			decodeStrict(t, sa, &acct)
			if acct.AutomountServiceAccountToken == nil || *acct.AutomountServiceAccountToken {
				t.Error("the ServiceAccount mounts its token by default")
			}

			c := container(t, spec, "consumer")
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
				c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Error("probes: want readiness /readyz and liveness /healthz")
			}
			for _, ctr := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
				r := ctr.Resources
				if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
					t.Errorf("container %s: no cpu/memory requests or memory limit", ctr.Name)
				}
				for _, e := range ctr.Env {
					if (strings.HasSuffix(e.Name, "_TOKEN") || strings.HasSuffix(e.Name, "_PASSWORD")) && e.ValueFrom == nil {
						t.Errorf("container %s: %s is a literal env value", ctr.Name, e.Name)
					}
				}
			}
			if c.Resources.Limits.Memory().Cmp(*c.Resources.Requests.Memory()) < 0 ||
				c.Resources.Limits.Memory().Value() < 512<<20 {
				t.Error("the consumer's memory limit is below PRODUCTION.md's 512 MiB (the lineage cache grows with records)")
			}

			// The schema step: an init container of the same image.
			s := container(t, spec, "schema")
			if !slices.ContainsFunc(spec.InitContainers, func(x corev1.Container) bool { return x.Name == "schema" }) {
				t.Fatal("the schema step is not an init container")
			}
			if s.Image != c.Image {
				t.Errorf("the schema init container runs %s, the consumer %s: the schema must follow the image", s.Image, c.Image)
			}
			if strings.Join(s.Args, " ") != "schema apply" || len(s.Command) > 0 {
				t.Errorf("the schema init container runs %q, want `consumer schema apply` (the schema is embedded)",
					strings.Join(append(s.Command, s.Args...), " "))
			}
			for _, ctr := range []*corev1.Container{s, c} {
				if slices.ContainsFunc(ctr.Args, func(a string) bool { return strings.HasPrefix(a, "--schema-file") }) {
					t.Errorf("container %s passes --schema-file: the schema is embedded in the binary", ctr.Name)
				}
			}
			// Both talk to the same SpiceDB, with the same schema prefix.
			se, ce := literalEnv(s), literalEnv(c)
			for _, v := range []string{"CONSUMER_SPICEDB_ENDPOINT", "CONSUMER_SPICEDB_CA", "CONSUMER_SPICEDB_INSECURE",
				"CONSUMER_SPICEDB_TOKEN_FILE", "CONSUMER_SCHEMA_PREFIX"} {
				if se[v] != ce[v] {
					t.Errorf("%s: the schema step has %q, the consumer %q", v, se[v], ce[v])
				}
			}
		})
	}
}

// TestEnvFilesAreMounted: every file a CONSUMER_* variable names lies in a
// volume mounted into that container, at a key its Secret or ConfigMap
// projects; the optional volumes (NATS credentials, SpiceDB's CA) are
// optional, so the pod starts without them.
func TestEnvFilesAreMounted(t *testing.T) {
	for _, k := range shipped(t) {
		t.Run(k.name, func(t *testing.T) {
			spec := &k.deployment(t).Spec.Template.Spec
			vols := map[string]corev1.Volume{}
			for _, v := range spec.Volumes {
				vols[v.Name] = v
			}
			for _, name := range []string{"nats-creds", "spicedb-ca"} {
				v, ok := vols[name]
				if !ok || v.Secret == nil || v.Secret.Optional == nil || !*v.Secret.Optional {
					t.Errorf("volume %s is not an optional Secret", name)
				}
			}
			if v := vols["secrets"]; v.Secret == nil || v.Secret.SecretName != "spaces-authz-secrets" {
				t.Error("the consumer does not read its secrets from the Secret spaces-authz-secrets")
			}
			for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
				for name, file := range literalEnv(&c) {
					if !strings.HasPrefix(file, "/") || !strings.HasPrefix(name, "CONSUMER_") {
						continue
					}
					if !fileMounted(c, vols, file) {
						t.Errorf("container %s: %s=%s is in no mounted volume key", c.Name, name, file)
					}
				}
			}
		})
	}
}

// fileMounted says whether file is a key projected by a volume mounted
// into c (or a file mounted with subPath).
func fileMounted(c corev1.Container, vols map[string]corev1.Volume, file string) bool {
	for _, m := range c.VolumeMounts {
		v := vols[m.Name]
		if m.SubPath != "" {
			if m.MountPath == file {
				return true
			}
			continue
		}
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		var items []corev1.KeyToPath
		switch {
		case v.Secret != nil:
			items = v.Secret.Items
		case v.ConfigMap != nil:
			items = v.ConfigMap.Items
		default:
			return false
		}
		if len(items) == 0 {
			return true // every key: can't tell without the Secret
		}
		for _, it := range items {
			if it.Path == rel {
				return true
			}
		}
	}
	return false
}

// TestRulesConfigMap: the ConfigMap the consumer mounts holds deploy/rules.yaml.
func TestRulesConfigMap(t *testing.T) {
	for _, k := range shipped(t) {
		t.Run(k.name, func(t *testing.T) {
			spec := &k.deployment(t).Spec.Template.Spec
			name := ""
			for _, v := range spec.Volumes {
				if v.Name == "rules" && v.ConfigMap != nil {
					name = v.ConfigMap.Name
				}
			}
			o, ok := k.find("ConfigMap", name)
			if name == "" || !ok {
				t.Fatalf("the rules volume names ConfigMap %q, which is not rendered", name)
			}
			var cm corev1.ConfigMap
			decodeStrict(t, o, &cm)
			rules := cm.Data["rules.yaml"]
			got, err := view.ParseRules([]byte(rules))
			if err != nil {
				t.Fatalf("the ConfigMap's rules are invalid: %v", err)
			}
			def, _ := view.ParseRules(Rules)
			if !sameRules(def, got) || rules != string(Rules) {
				t.Error("the ConfigMap's rules differ from deploy/rules.yaml")
			}
		})
	}
}

// prometheusRule builds the PrometheusRule resource of the component from a
// Prometheus rule file: its groups, as they are.
func prometheusRule(alerts []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(alerts, &doc); err != nil {
		return nil, fmt.Errorf("parse the alert rules: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the alert rules are not a YAML mapping")
	}
	var groups *yaml.Node
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "groups" {
			groups = root.Content[i+1]
		}
	}
	if groups == nil || groups.Kind != yaml.SequenceNode || len(groups.Content) == 0 {
		return nil, fmt.Errorf("the alert rules have no groups")
	}
	type meta struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	obj := struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   meta   `yaml:"metadata"`
		Spec       struct {
			Groups *yaml.Node `yaml:"groups"`
		} `yaml:"spec"`
	}{APIVersion: "monitoring.coreos.com/v1", Kind: "PrometheusRule",
		Metadata: meta{Name: consumerName, Labels: map[string]string{"app.kubernetes.io/name": consumerName}}}
	obj.Spec.Groups = groups
	var b bytes.Buffer
	b.WriteString("# Code generated from deploy/prometheus/alerts.yaml by\n" +
		"#   go test ./deploy -run TestKustomizeCopies -update\n# DO NOT EDIT.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&obj); err != nil {
		return nil, fmt.Errorf("encode the PrometheusRule: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode the PrometheusRule: %w", err)
	}
	return b.Bytes(), nil
}

// TestKustomizeCopies: kustomize loads nothing outside deploy/k8s, so it
// holds a copy of deploy/rules.yaml and a PrometheusRule generated from
// deploy/prometheus/alerts.yaml. This fails when either is stale; -update
// rewrites them.
func TestKustomizeCopies(t *testing.T) {
	rule, err := prometheusRule(mustRead(t, "prometheus/alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dst, src string
		want     []byte
	}{
		{"k8s/base/rules.yaml", "deploy/rules.yaml", Rules},
		{prometheusYML, "deploy/prometheus/alerts.yaml", rule},
	} {
		if *update {
			if err := os.WriteFile(c.dst, c.want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(c.dst)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("deploy/%s is stale after a change of %s: run go test ./deploy -run TestKustomizeCopies -update", c.dst, c.src)
		}
	}
}

func TestPrometheusRuleGenerator(t *testing.T) {
	for _, bad := range []string{"", "groups: []\n", "- a\n", "groups: {a: 1}\n", "rules: [x]\n", ": :\n\t"} {
		if _, err := prometheusRule([]byte(bad)); err == nil {
			t.Errorf("prometheusRule(%q) accepted it", bad)
		}
	}
	// The rendered PrometheusRule holds exactly the alert file's groups.
	dir := withComponent(t)
	objs, err := kustomize(dir)
	if err != nil {
		t.Fatal(err)
	}
	k := kustomization{name: "base+components/prom-operator", objs: objs}
	o, ok := k.find("PrometheusRule", consumerName)
	if !ok {
		t.Fatal("no PrometheusRule")
	}
	var got struct {
		Spec struct {
			Groups []any `json:"groups"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(o.JSON, &got); err != nil {
		t.Fatal(err)
	}
	var want struct {
		Groups []any `yaml:"groups"`
	}
	if err := yaml.Unmarshal(mustRead(t, "prometheus/alerts.yaml"), &want); err != nil {
		t.Fatal(err)
	}
	gj, _ := json.Marshal(got.Spec.Groups)
	wj, _ := json.Marshal(want.Groups)
	if !bytes.Equal(gj, wj) || len(want.Groups) == 0 {
		t.Error("the PrometheusRule's groups differ from deploy/prometheus/alerts.yaml")
	}
	// The ServiceMonitor scrapes a named port of the Service.
	sm, ok := k.find("ServiceMonitor", consumerName)
	svcObj, ok2 := k.find("Service", consumerName)
	if !ok || !ok2 {
		t.Fatal("no ServiceMonitor or Service")
	}
	var mon struct {
		Spec struct {
			Selector  struct{ MatchLabels map[string]string } `json:"selector"`
			Endpoints []struct{ Port, Path string }           `json:"endpoints"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(sm.JSON, &mon); err != nil {
		t.Fatal(err)
	}
	var svc corev1.Service
	decodeStrict(t, svcObj, &svc)
	if len(mon.Spec.Endpoints) != 1 || mon.Spec.Endpoints[0].Path != "/metrics" ||
		!slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == mon.Spec.Endpoints[0].Port }) {
		t.Errorf("the ServiceMonitor's endpoints %+v are not the Service's /metrics port", mon.Spec.Endpoints)
	}
	if !reflect.DeepEqual(mon.Spec.Selector.MatchLabels, svc.Labels) {
		t.Errorf("the ServiceMonitor selects %v, the Service is labelled %v", mon.Spec.Selector.MatchLabels, svc.Labels)
	}
}

// TestKubernetesAdminAPI: the admin API listens on loopback in the pod,
// its token comes from the Secret, and the Service doesn't expose it.
func TestKubernetesAdminAPI(t *testing.T) {
	k := base(t)
	spec := &k.deployment(t).Spec.Template.Spec
	c := container(t, spec, "consumer")
	env := literalEnv(c)
	admin := flagValue(c.Args, "--admin-addr")
	if admin == "" {
		admin = env["CONSUMER_ADMIN_ADDR"]
	}
	host, port, err := net.SplitHostPort(admin)
	if err != nil || (host != "127.0.0.1" && host != "::1" && host != "localhost") {
		t.Fatalf("--admin-addr %q: the admin API must listen on loopback in the pod (%v)", admin, err)
	}
	for _, e := range c.Env {
		if e.Name == "CONSUMER_ADMIN_TOKEN" && e.ValueFrom == nil {
			t.Error("the admin token is a literal env value")
		}
	}
	tokenFile := env["CONSUMER_ADMIN_TOKEN_FILE"]
	if tokenFile == "" {
		t.Fatal("no CONSUMER_ADMIN_TOKEN_FILE: the admin API is off, and reconcile --fix can't reach it")
	}
	found := false
	for _, m := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != "spaces-authz-secrets" {
				continue
			}
			for _, it := range v.Secret.Items {
				if path.Join(m.MountPath, it.Path) == tokenFile {
					found = it.Key == "admin-token"
				}
			}
		}
	}
	if !found {
		t.Errorf("CONSUMER_ADMIN_TOKEN_FILE %s is not the admin-token key of spaces-authz-secrets", tokenFile)
	}
	o, ok := k.find("Service", consumerName)
	if !ok {
		t.Fatal("no Service")
	}
	var svc corev1.Service
	decodeStrict(t, o, &svc)
	for _, p := range svc.Spec.Ports {
		if strconv.Itoa(int(p.Port)) == port || p.TargetPort.String() == port {
			t.Errorf("the Service exposes the admin port %s", port)
		}
	}
	overlay, err := kustomize("k8s/overlays/example")
	if err != nil {
		t.Fatal(err)
	}
	so, ok := kustomization{objs: overlay}.find("Secret", "spaces-authz-secrets")
	var secret corev1.Secret
	if ok {
		decodeStrict(t, so, &secret)
	}
	if secret.StringData["admin-token"] == "" {
		t.Error("the example Secret has no admin-token")
	}
}

// TestNetworkPolicy: the consumer's pods accept only their HTTP port, from
// named peers, and reach only DNS and the ports of the SpiceDB, PDS and
// NATS endpoints the Deployment configures.
func TestNetworkPolicy(t *testing.T) {
	for _, k := range shipped(t) {
		t.Run(k.name, func(t *testing.T) { checkNetworkPolicy(t, k) })
	}
}

func checkNetworkPolicy(t *testing.T, k kustomization) {
	d := k.deployment(t)
	c := container(t, &d.Spec.Template.Spec, "consumer")
	o, ok := k.find("NetworkPolicy", consumerName)
	if !ok {
		t.Fatal("no NetworkPolicy for the consumer")
	}
	var np networkingv1.NetworkPolicy
	decodeStrict(t, o, &np)
	sel := np.Spec.PodSelector.MatchLabels
	if len(sel) == 0 {
		t.Fatal("the policy selects every pod of the namespace")
	}
	for key, v := range sel {
		if d.Spec.Template.Labels[key] != v {
			t.Fatalf("the policy's podSelector %v doesn't select the consumer's pods %v", sel, d.Spec.Template.Labels)
		}
	}
	var types []string
	for _, p := range np.Spec.PolicyTypes {
		types = append(types, string(p))
	}
	if strings.Join(types, ",") != "Ingress,Egress" {
		t.Fatalf("policyTypes %q: want Ingress,Egress (an absent egress section allows everything)", types)
	}

	// Ingress: the HTTP port, by name or number, from named peers only.
	httpPort := ""
	for _, p := range c.Ports {
		if p.Name == "http" {
			httpPort = strconv.Itoa(int(p.ContainerPort))
		}
	}
	if len(np.Spec.Ingress) == 0 {
		t.Fatal("no ingress rule: Prometheus can't scrape /metrics")
	}
	for i, rule := range np.Spec.Ingress {
		if len(rule.Ports) == 0 || len(rule.From) == 0 {
			t.Errorf("ingress rule %d allows every port or every peer", i)
		}
		for _, p := range rule.Ports {
			port := ""
			if p.Port != nil {
				port = p.Port.String()
			}
			if (port != "http" && port != httpPort) || p.Protocol == nil || *p.Protocol != corev1.ProtocolTCP {
				t.Errorf("ingress rule %d opens %v/%s, not the HTTP port", i, p.Protocol, port)
			}
		}
		for _, peer := range rule.From {
			if peer.IPBlock != nil {
				t.Errorf("ingress rule %d admits an ipBlock", i)
			}
			if ns := peer.NamespaceSelector; ns != nil && len(ns.MatchLabels) == 0 && len(ns.MatchExpressions) == 0 {
				t.Errorf("ingress rule %d admits every namespace", i)
			}
			if ns := peer.NamespaceSelector; ns != nil && (peer.PodSelector == nil || len(peer.PodSelector.MatchLabels) == 0) {
				t.Errorf("ingress rule %d admits every pod of namespace %v, not Prometheus alone", i, ns.MatchLabels)
			}
		}
	}

	// Egress: exactly DNS and the configured endpoints' ports.
	env := literalEnv(c)
	want := map[string]bool{"UDP/53": true, "TCP/53": true}
	for _, v := range []string{"CONSUMER_SPICEDB_ENDPOINT", "CONSUMER_PDS_URL", "CONSUMER_NATS_URL"} {
		if env[v] == "" {
			t.Fatalf("the Deployment sets no %s", v)
		}
		want[fmt.Sprintf("TCP/%d", portOf(t, env[v]))] = true
	}
	got := map[string]bool{}
	for i, rule := range np.Spec.Egress {
		if len(rule.Ports) == 0 || len(rule.To) == 0 {
			t.Errorf("egress rule %d allows every port or every destination", i)
		}
		for _, p := range rule.Ports {
			if p.Protocol == nil || p.Port == nil {
				t.Errorf("egress rule %d: a port without protocol or number", i)
				continue
			}
			got[fmt.Sprintf("%s/%s", *p.Protocol, p.Port.String())] = true
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
	spec := &base(t).deployment(t).Spec.Template.Spec
	c := container(t, spec, "consumer")
	tmpVolume := ""
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/tmp" && !m.ReadOnly {
			tmpVolume = m.Name
		}
	}
	if env := literalEnv(c); env["TMPDIR"] != "" && env["TMPDIR"] != "/tmp" {
		t.Fatalf("TMPDIR=%s: the test expects snapshots in /tmp", env["TMPDIR"])
	}
	if tmpVolume == "" {
		t.Fatal("no writable volume at /tmp: every getRepo fails on a read-only root filesystem")
	}
	for _, v := range spec.Volumes {
		if v.Name != tmpVolume {
			continue
		}
		if v.EmptyDir == nil {
			t.Fatalf("volume %s at /tmp is not an emptyDir", tmpVolume)
		}
		if v.EmptyDir.Medium == corev1.StorageMediumMemory {
			t.Fatal("/tmp is in memory: spooled CARs would count against the memory limit")
		}
		return
	}
	t.Fatalf("volume %s is mounted but not declared", tmpVolume)
}
