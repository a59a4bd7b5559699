package deploy

import (
	"bufio"
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// composeSecrets are the variables compose.yaml's header names as secrets,
// with values the tests can find wherever they end up.
var composeSecrets = map[string]string{
	"SPICEDB_PRESHARED_KEY":                     "secret-spicedb-key-1f0c",
	"POSTGRES_PASSWORD":                         "secret-postgres-password-9a7e",
	"PDS_JWT_SECRET":                            "secret-pds-jwt-3b21",
	"PDS_ADMIN_PASSWORD":                        "secret-pds-admin-77d4",
	"PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX": "secret-plc-key-c0de",
}

// loadCompose loads compose.yaml as `docker compose config` does: with the
// given profiles and environment only (neither the process's environment
// nor a .env file).
func loadCompose(t *testing.T, profiles []string, env map[string]string) (*types.Project, error) {
	t.Helper()
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{"compose.yaml"}, cli.WithWorkingDirectory("."),
		cli.WithEnv(list), cli.WithProfiles(profiles), cli.WithResolvedPaths(true))
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

func composeEnv(withPDS bool, extra ...string) map[string]string {
	env := map[string]string{}
	for k, v := range composeSecrets {
		if withPDS || !strings.HasPrefix(k, "PDS_") {
			env[k] = v
		}
	}
	if withPDS {
		env["PDS_HOSTNAME"] = "pds.example.com"
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// TestComposeFile loads the stack with and without the bundled PDS and
// checks its order of start, its healthchecks and where its secrets go.
func TestComposeFile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		profiles []string
		env      map[string]string
		pdsURL   string
	}{
		{"bundled PDS", []string{"pds"}, composeEnv(true), "http://pds:3000"},
		{"own PDS", nil, composeEnv(false, "CONSUMER_PDS_URL", "https://pds.example.com"), "https://pds.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := loadCompose(t, tc.profiles, tc.env)
			if err != nil {
				t.Fatalf("docker compose config would fail: %v", err)
			}
			want := []string{"postgres", "spicedb-migrate", "spicedb", "nats", "schema", "consumer"}
			if tc.profiles != nil {
				want = append(want, "pds")
			}
			if got := p.ServiceNames(); !sameSet(got, want) {
				t.Errorf("services %v, want %v", got, want)
			}
			if _, err := p.GetService("pds"); (err == nil) != (tc.profiles != nil) {
				t.Errorf("the pds service runs without its profile, or not with it (%v)", err)
			}
			for name, svc := range p.Services {
				checkComposeService(t, p, name, svc)
			}
			sp := p.Services["spicedb"]
			if sp.DependsOn["spicedb-migrate"].Condition != types.ServiceConditionCompletedSuccessfully {
				t.Error("spicedb does not wait for spicedb-migrate")
			}
			for _, name := range []string{"spicedb", "spicedb-migrate"} {
				if v := p.Services[name].Environment["SPICEDB_DATASTORE_ENGINE"]; v == nil || *v != "postgres" {
					t.Errorf("%s is not on postgres", name)
				}
			}
			if v := sp.Environment["SPICEDB_GRPC_PRESHARED_KEY"]; v == nil || *v != composeSecrets["SPICEDB_PRESHARED_KEY"] {
				t.Error("spicedb's preshared key is not SPICEDB_GRPC_PRESHARED_KEY from SPICEDB_PRESHARED_KEY")
			}
			if !slices.Contains(p.Services["nats"].Command, "-js") {
				t.Error("nats runs without JetStream")
			}
			for _, name := range []string{"schema", "consumer"} {
				if v := p.Services[name].Environment["CONSUMER_SPICEDB_TOKEN"]; v == nil || *v != composeSecrets["SPICEDB_PRESHARED_KEY"] {
					t.Errorf("%s gets no CONSUMER_SPICEDB_TOKEN", name)
				}
			}
			if s := p.Services["schema"]; s.DependsOn["spicedb"].Condition != types.ServiceConditionHealthy ||
				strings.Join(s.Command, " ") != "schema apply" {
				t.Errorf("schema runs %q after spicedb is %s: want `schema apply` (the schema is embedded) once it is healthy",
					strings.Join(s.Command, " "), s.DependsOn["spicedb"].Condition)
			}
			c := p.Services["consumer"]
			if c.DependsOn["schema"].Condition != types.ServiceConditionCompletedSuccessfully {
				t.Error("the consumer does not wait for the schema")
			}
			if v := c.Environment["CONSUMER_PDS_URL"]; v == nil || *v != tc.pdsURL {
				t.Errorf("CONSUMER_PDS_URL %v, want %s", v, tc.pdsURL)
			}
		})
	}
}

// checkComposeService: a pinned image, existing bind mounts, no secret on a
// command line, and every dependency on a long-running service waits for
// its healthcheck.
func checkComposeService(t *testing.T, p *types.Project, name string, svc types.ServiceConfig) {
	t.Helper()
	if svc.Image == "" {
		t.Errorf("service %s has no image", name)
	} else {
		checkImage(t, "service "+name, svc.Image)
	}
	for _, v := range svc.Volumes {
		if v.Type == types.VolumeTypeBind {
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("service %s mounts %s, which does not exist", name, v.Source)
			}
		}
	}
	var argv []string
	argv = append(argv, svc.Command...)
	argv = append(argv, svc.Entrypoint...)
	if svc.HealthCheck != nil {
		argv = append(argv, svc.HealthCheck.Test...)
	}
	for key, secret := range composeSecrets {
		for _, a := range argv {
			if strings.Contains(a, secret) {
				t.Errorf("service %s has %s on its command line (%q): pass it in the environment", name, key, a)
			}
		}
	}
	for dep, d := range svc.DependsOn {
		other, ok := p.Services[dep]
		if !ok {
			if _, disabled := p.DisabledServices[dep]; !disabled || d.Required {
				t.Errorf("service %s depends on %s, which is not there", name, dep)
			}
			other = p.DisabledServices[dep]
		}
		oneShot := other.Restart == "no" || other.Restart == types.RestartPolicyOnFailure
		switch {
		case oneShot && d.Condition != types.ServiceConditionCompletedSuccessfully:
			t.Errorf("service %s starts before the one-shot %s completes", name, dep)
		case !oneShot && d.Condition != types.ServiceConditionHealthy:
			t.Errorf("service %s waits for %s to be %s, not healthy", name, dep, d.Condition)
		case !oneShot && (other.HealthCheck == nil || other.HealthCheck.Disable || len(other.HealthCheck.Test) == 0):
			t.Errorf("service %s waits for %s to be healthy, but it has no healthcheck", name, dep)
		}
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestComposeRequiresSecrets: a missing key stops `docker compose config`
// rather than starting SpiceDB or Postgres with an empty one. (The PDS's
// variables can't be required so: compose interpolates the services of
// inactive profiles too, and users with their own PDS don't set them.)
func TestComposeRequiresSecrets(t *testing.T) {
	for _, key := range []string{"SPICEDB_PRESHARED_KEY", "POSTGRES_PASSWORD"} {
		env := composeEnv(false)
		delete(env, key)
		if _, err := loadCompose(t, nil, env); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("loaded without %s (%v)", key, err)
		}
	}
}

// TestDockerignore: the build context leaves out what the image doesn't
// need (today: the git history, the tool cache and the PDS's node_modules).
func TestDockerignore(t *testing.T) {
	f, err := os.Open("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	have := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			have[strings.TrimPrefix(line, "/")] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", ".cache", "**/node_modules"} {
		if !have[want] {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
	for p := range have {
		// The Dockerfile copies go.mod and go.sum, then builds the module.
		if slices.Contains([]string{"go.mod", "go.sum", "cmd", "deploy", "*.go", "**/*.go"}, p) {
			t.Errorf(".dockerignore has %q: the build needs it", p)
		}
	}
}
