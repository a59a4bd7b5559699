package deploy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
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

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
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
