package deploy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// restrictedViolations lists how a pod spec breaks the Pod Security
// Standards' "restricted" profile, plus this project's own rules on top of
// it: a read-only root filesystem, a numeric user set in the pod spec (the
// image's user is not trusted to be numeric) and no service account token.
// Every container is checked, init containers included. None means the spec
// is admitted.
func restrictedViolations(spec *corev1.PodSpec) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if spec.HostNetwork {
		bad("hostNetwork")
	}
	if spec.HostPID {
		bad("hostPID")
	}
	if spec.HostIPC {
		bad("hostIPC")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		bad("automountServiceAccountToken is not false")
	}
	for _, v := range spec.Volumes {
		// The restricted profile's allowed volume types.
		vs := v.VolumeSource
		if vs.ConfigMap == nil && vs.CSI == nil && vs.DownwardAPI == nil && vs.EmptyDir == nil &&
			vs.Ephemeral == nil && vs.PersistentVolumeClaim == nil && vs.Projected == nil && vs.Secret == nil {
			bad("volume %s: type not allowed (hostPath or another non-restricted type)", v.Name)
		}
	}
	pod := spec.SecurityContext
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	if pod.RunAsUser != nil && *pod.RunAsUser == 0 {
		bad("pod runAsUser 0")
	}
	if pod.SeccompProfile != nil && !seccompAllowed(pod.SeccompProfile) {
		bad("pod seccompProfile %s", pod.SeccompProfile.Type)
	}
	for _, s := range pod.Sysctls {
		bad("pod sysctl %s (none is needed)", s.Name)
	}
	containers := append(slices.Clone(spec.InitContainers), spec.Containers...)
	for _, c := range containers {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		name := c.Name
		if sc.Privileged != nil && *sc.Privileged {
			bad("container %s: privileged", name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			bad("container %s: allowPrivilegeEscalation is not false", name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			bad("container %s: readOnlyRootFilesystem is not true", name)
		}
		var drop, add []string
		if sc.Capabilities != nil {
			for _, d := range sc.Capabilities.Drop {
				drop = append(drop, string(d))
			}
			for _, a := range sc.Capabilities.Add {
				add = append(add, string(a))
			}
		}
		if !slices.Contains(drop, "ALL") {
			bad("container %s: capabilities do not drop ALL", name)
		}
		for _, a := range add {
			if a != "NET_BIND_SERVICE" {
				bad("container %s: adds capability %s", name, a)
			}
		}
		nonRoot := sc.RunAsNonRoot
		if nonRoot == nil {
			nonRoot = pod.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			bad("container %s: runAsNonRoot is not true", name)
		}
		user := sc.RunAsUser
		if user == nil {
			user = pod.RunAsUser
		}
		if user == nil || *user == 0 {
			bad("container %s: no numeric non-root runAsUser", name)
		}
		switch {
		case sc.SeccompProfile != nil:
			if !seccompAllowed(sc.SeccompProfile) {
				bad("container %s: seccompProfile %s", name, sc.SeccompProfile.Type)
			}
		case pod.SeccompProfile == nil:
			bad("container %s: no seccompProfile (RuntimeDefault or Localhost)", name)
		}
		if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
			bad("container %s: procMount %s", name, *sc.ProcMount)
		}
		if sc.WindowsOptions != nil && sc.WindowsOptions.HostProcess != nil && *sc.WindowsOptions.HostProcess {
			bad("container %s: hostProcess", name)
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				bad("container %s: hostPort %d", name, p.HostPort)
			}
		}
	}
	return out
}

func seccompAllowed(p *corev1.SeccompProfile) bool {
	return p.Type == corev1.SeccompProfileTypeRuntimeDefault || p.Type == corev1.SeccompProfileTypeLocalhost
}

// compliantPod is a pod spec that meets every rule.
func compliantPod() *corev1.PodSpec {
	f, tr := false, true
	uid := int64(65532)
	sc := func() *corev1.SecurityContext {
		return &corev1.SecurityContext{AllowPrivilegeEscalation: &f, ReadOnlyRootFilesystem: &tr,
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	}
	return &corev1.PodSpec{
		AutomountServiceAccountToken: &f,
		SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &tr, RunAsUser: &uid, RunAsGroup: &uid,
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		InitContainers: []corev1.Container{{Name: "init", SecurityContext: sc()}},
		Containers: []corev1.Container{{Name: "main", SecurityContext: sc(),
			Ports: []corev1.ContainerPort{{ContainerPort: 9464}}}},
		Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
	}
}

func TestRestrictedViolations(t *testing.T) {
	if v := restrictedViolations(compliantPod()); len(v) > 0 {
		t.Fatalf("the compliant spec is refused: %v", v)
	}
	tr, f := true, false
	root := int64(0)
	unconfined := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
	procUnmasked := corev1.UnmaskedProcMount
	for _, tc := range []struct {
		name, want string
		mutate     func(*corev1.PodSpec)
	}{
		{"hostNetwork", "hostNetwork", func(s *corev1.PodSpec) { s.HostNetwork = true }},
		{"hostPID", "hostPID", func(s *corev1.PodSpec) { s.HostPID = true }},
		{"hostIPC", "hostIPC", func(s *corev1.PodSpec) { s.HostIPC = true }},
		{"token mounted", "automountServiceAccountToken", func(s *corev1.PodSpec) { s.AutomountServiceAccountToken = &tr }},
		{"token by default", "automountServiceAccountToken", func(s *corev1.PodSpec) { s.AutomountServiceAccountToken = nil }},
		{"hostPath", "volume host: type not allowed", func(s *corev1.PodSpec) {
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "host",
				VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}},
		{"pod root", "pod runAsUser 0", func(s *corev1.PodSpec) { s.SecurityContext.RunAsUser = &root }},
		{"pod unconfined", "pod seccompProfile", func(s *corev1.PodSpec) { s.SecurityContext.SeccompProfile = unconfined }},
		{"sysctl", "sysctl", func(s *corev1.PodSpec) {
			s.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "kernel.msgmax", Value: "1"}}
		}},
		{"privileged", "container main: privileged", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.Privileged = &tr }},
		{"escalation", "container main: allowPrivilegeEscalation", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.AllowPrivilegeEscalation = &tr
		}},
		{"escalation unset", "container init: allowPrivilegeEscalation", func(s *corev1.PodSpec) {
			s.InitContainers[0].SecurityContext.AllowPrivilegeEscalation = nil
		}},
		{"writable root", "container main: readOnlyRootFilesystem", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.ReadOnlyRootFilesystem = &f
		}},
		{"no drop ALL", "container init: capabilities do not drop ALL", func(s *corev1.PodSpec) {
			s.InitContainers[0].SecurityContext.Capabilities.Drop = []corev1.Capability{"NET_RAW"}
		}},
		{"no security context", "container init: allowPrivilegeEscalation", func(s *corev1.PodSpec) {
			s.InitContainers[0].SecurityContext = nil
		}},
		{"adds a capability", "adds capability SYS_ADMIN", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"SYS_ADMIN"}
		}},
		{"root allowed", "container main: runAsNonRoot", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.RunAsNonRoot = &f
		}},
		{"no runAsNonRoot", "container init: runAsNonRoot", func(s *corev1.PodSpec) { s.SecurityContext.RunAsNonRoot = nil }},
		{"no numeric user", "container main: no numeric non-root runAsUser", func(s *corev1.PodSpec) {
			s.SecurityContext.RunAsUser = nil
		}},
		{"container root", "container main: no numeric non-root runAsUser", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.RunAsUser = &root
		}},
		{"no seccomp", "container main: no seccompProfile", func(s *corev1.PodSpec) { s.SecurityContext.SeccompProfile = nil }},
		{"container unconfined", "container init: seccompProfile Unconfined", func(s *corev1.PodSpec) {
			s.InitContainers[0].SecurityContext.SeccompProfile = unconfined
		}},
		{"procMount", "procMount", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.ProcMount = &procUnmasked }},
		{"hostProcess", "hostProcess", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.WindowsOptions = &corev1.WindowsSecurityContextOptions{HostProcess: &tr}
		}},
		{"hostPort", "hostPort 9464", func(s *corev1.PodSpec) { s.Containers[0].Ports[0].HostPort = 9464 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := compliantPod()
			tc.mutate(spec)
			v := restrictedViolations(spec)
			if !slices.ContainsFunc(v, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Errorf("want a violation %q, got %v", tc.want, v)
			}
		})
	}
}
