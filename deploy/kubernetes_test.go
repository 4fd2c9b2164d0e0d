package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/config"
	"go.yaml.in/yaml/v3"
)

// The parts of the Kubernetes objects that the test reads.
type (
	object struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Data map[string]string `yaml:"data"` // ConfigMap
		Spec objectSpec        `yaml:"spec"` // Service, StatefulSet
	}
	objectSpec struct {
		// Service
		ClusterIP string        `yaml:"clusterIP"`
		Ports     []servicePort `yaml:"ports"`
		Selector  yaml.Node     `yaml:"selector"` // a Service's labels; a StatefulSet's matchLabels
		// StatefulSet
		ServiceName string `yaml:"serviceName"`
		Template    struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	}
	servicePort struct {
		Name       string    `yaml:"name"`
		Port       int       `yaml:"port"`
		TargetPort yaml.Node `yaml:"targetPort"` // a name or a number
	}
	podSpec struct {
		TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
		SecurityContext               struct {
			RunAsNonRoot *bool `yaml:"runAsNonRoot"`
			RunAsUser    *int  `yaml:"runAsUser"`
			RunAsGroup   *int  `yaml:"runAsGroup"`
			FSGroup      *int  `yaml:"fsGroup"`
		} `yaml:"securityContext"`
		Containers []container `yaml:"containers"`
		Volumes    []struct {
			Name      string `yaml:"name"`
			ConfigMap *struct {
				Name string `yaml:"name"`
			} `yaml:"configMap"`
			Secret *struct {
				SecretName string `yaml:"secretName"`
				Items      []struct {
					Key  string `yaml:"key"`
					Path string `yaml:"path"`
				} `yaml:"items"`
			} `yaml:"secret"`
		} `yaml:"volumes"`
	}
	container struct {
		Name string `yaml:"name"`
		Env  []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom *struct {
				SecretKeyRef *struct {
					Name string `yaml:"name"`
					Key  string `yaml:"key"`
				} `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		LivenessProbe  *probe `yaml:"livenessProbe"`
		ReadinessProbe *probe `yaml:"readinessProbe"`
		VolumeMounts   []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	}
	probe struct {
		HTTPGet *struct {
			Path string    `yaml:"path"`
			Port yaml.Node `yaml:"port"`
		} `yaml:"httpGet"`
	}
)

// readManifests reads every object of the YAML files in dir.
func readManifests(t *testing.T, dir string) []*object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	var objs []*object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			o := new(object)
			err := dec.Decode(o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" {
				continue // an empty document
			}
			objs = append(objs, o)
		}
	}
	return objs
}

func find(objs []*object, kind, name string) *object {
	for _, o := range objs {
		if o.Kind == kind && (name == "" || o.Metadata.Name == name) {
			return o
		}
	}
	return nil
}

// port returns the number of a probe's or Service's port: a number, or
// the name of one of the container's ports.
func (c *container) port(t *testing.T, n yaml.Node) int {
	t.Helper()
	if p, err := strconv.Atoi(n.Value); err == nil {
		return p
	}
	for _, p := range c.Ports {
		if p.Name == n.Value {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, n.Value)
	return 0
}

// serviceLinks returns the variables Kubernetes puts in a pod's
// environment for a Service with a cluster IP (as the kubelet names them).
func serviceLinks(svc *object, ip string) []string {
	prefix := strings.ToUpper(strings.ReplaceAll(svc.Metadata.Name, "-", "_"))
	var env []string
	for i, p := range svc.Spec.Ports {
		port := strconv.Itoa(p.Port)
		if i == 0 {
			env = append(env, prefix+"_SERVICE_HOST="+ip, prefix+"_SERVICE_PORT="+port, prefix+"_PORT=tcp://"+net.JoinHostPort(ip, port))
		}
		if p.Name != "" {
			env = append(env, prefix+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_"))+"="+port)
		}
		base := prefix + "_PORT_" + port + "_TCP"
		env = append(env, base+"=tcp://"+net.JoinHostPort(ip, port), base+"_PROTO=tcp", base+"_PORT="+port, base+"_ADDR="+ip)
	}
	return env
}

func portOf(t *testing.T, key, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	n, err2 := strconv.Atoi(p)
	if err != nil || err2 != nil {
		t.Fatalf("%s %q: no port", key, addr)
	}
	return n
}

// deref returns what p points to, or "unset".
func deref[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}

// underMount reports whether file lies in the volume mounted at mount.
func underMount(file, mount string) bool {
	rel, ok := strings.CutPrefix(path.Clean(file), path.Clean(mount)+"/")
	return ok && rel != ""
}

// dockerUser returns the uid of the Dockerfile's last USER line.
func dockerUser(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^USER\s+(\d+)(:\d+)?\s*$`).FindAllSubmatch(data, -1)
	if len(m) == 0 {
		t.Fatal("the Dockerfile has no numeric USER line (Kubernetes' runAsNonRoot needs one)")
	}
	uid, _ := strconv.Atoi(string(m[len(m)-1][1]))
	return uid
}

// The example in deploy/kubernetes fits what Tern reads: the ConfigMap's
// tern.yaml loads as tern serve would load it in the pod (its environment,
// with the service links of the Service "tern"), the probes ask /healthz
// and /readyz on admin.listen's port, the Service and container ports are
// the listeners', the store's volume is mounted at persistence.data_dir,
// the grace period covers drain_delay and shutdown_timeout, and the pod
// runs as the image's non-root user.
func TestKubernetesManifests(t *testing.T) {
	objs := readManifests(t, "kubernetes")
	cm, svc, sts := find(objs, "ConfigMap", ""), find(objs, "Service", "tern"), find(objs, "StatefulSet", "")
	if cm == nil || svc == nil || sts == nil {
		t.Fatalf("want a ConfigMap, a Service named tern and a StatefulSet; have %d objects", len(objs))
	}
	pod := &sts.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := &pod.Containers[0]
	mounts := map[string]string{} // volume name -> mount path
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}

	// The pod's environment: the container's variables (secrets replaced
	// by values that pass validation) and the service links.
	env := serviceLinks(svc, "10.0.0.1")
	var configFile string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			v = "secret-of-the-test-0123456789"
		}
		env = append(env, e.Name+"="+v)
		if e.Name == config.EnvConfigFile {
			configFile = v
		}
	}
	// TERN_CONFIG names the ConfigMap's key where its volume is mounted.
	var cmMount string
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name {
			cmMount = mounts[v.Name]
		}
	}
	if cmMount == "" || configFile != path.Join(cmMount, "tern.yaml") {
		t.Fatalf("TERN_CONFIG %q is not tern.yaml in the ConfigMap's mount %q", configFile, cmMount)
	}
	text, ok := cm.Data["tern.yaml"]
	if !ok {
		t.Fatal("the ConfigMap has no tern.yaml")
	}
	file := filepath.Join(t.TempDir(), "tern.yaml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, env, nil)
	if err != nil {
		t.Fatalf("tern serve would not start with the ConfigMap's tern.yaml: %v", err)
	}
	links := 0
	for _, v := range cfg.IgnoredEnv() {
		if v.ServiceLink {
			links++
		}
	}
	if links == 0 {
		t.Error("no service link variable was seen (and ignored)")
	}

	type result struct {
		what string
		ok   bool
		got  any
	}
	var checks []result
	check := func(what string, ok bool, got any) { checks = append(checks, result{what, ok, got}) }

	// Probes: on admin.listen's port.
	if cfg.Admin.Listen == "" {
		t.Fatal("admin.listen is empty: nothing answers the probes")
	}
	adminPort := portOf(t, "admin.listen", cfg.Admin.Listen)
	for _, p := range []struct {
		name, path string
		pr         *probe
	}{{"liveness", "/healthz", c.LivenessProbe}, {"readiness", "/readyz", c.ReadinessProbe}} {
		if p.pr == nil || p.pr.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		check(p.name+" probe path is "+p.path, p.pr.HTTPGet.Path == p.path, p.pr.HTTPGet.Path)
		check(p.name+" probe port is admin.listen's", c.port(t, p.pr.HTTPGet.Port) == adminPort, c.port(t, p.pr.HTTPGet.Port))
	}

	// The store on a claimed volume at persistence.data_dir.
	var claimed bool
	for _, v := range sts.Spec.VolumeClaimTemplates {
		if mounts[v.Metadata.Name] == path.Clean(cfg.Persistence.DataDir) {
			claimed = true
		}
	}
	check("a volumeClaimTemplate is mounted at persistence.data_dir "+cfg.Persistence.DataDir, claimed, mounts)

	// The password file comes from a mounted Secret.
	if pw := cfg.Auth.PasswordFile; pw != "" {
		var found bool
		for _, v := range pod.Volumes {
			if v.Secret == nil || !underMount(pw, mounts[v.Name]) {
				continue
			}
			for _, it := range v.Secret.Items {
				found = found || path.Join(mounts[v.Name], it.Path) == pw
			}
		}
		check("auth.password_file is a file of a mounted Secret", found, pw)
	}

	// Grace period covers the drain.
	need := time.Duration(cfg.DrainDelay) + time.Duration(cfg.ShutdownTimeout)
	grace := pod.TerminationGracePeriodSeconds
	check(fmt.Sprintf("terminationGracePeriodSeconds >= drain_delay + shutdown_timeout (%v)", need),
		grace != nil && time.Duration(*grace)*time.Second >= need, deref(grace))

	// The image's non-root user.
	sc := pod.SecurityContext
	uid := dockerUser(t)
	check("runAsNonRoot", sc.RunAsNonRoot != nil && *sc.RunAsNonRoot, deref(sc.RunAsNonRoot))
	check(fmt.Sprintf("runAsUser is the Dockerfile's USER %d", uid), sc.RunAsUser != nil && *sc.RunAsUser == uid, deref(sc.RunAsUser))
	check("fsGroup lets that user read the Secret and write the volume", sc.FSGroup != nil && *sc.FSGroup == uid, deref(sc.FSGroup))

	// Ports: every MQTT listener is a container port and a port of the
	// Service, and the Service reaches nothing else but the admin port.
	listenerPorts := map[int]string{adminPort: "admin.listen"}
	for i, l := range cfg.Listeners.TCP {
		listenerPorts[portOf(t, "listeners.tcp", l.Address)] = fmt.Sprintf("listeners.tcp[%d]", i)
	}
	for i, l := range cfg.Listeners.WS {
		listenerPorts[portOf(t, "listeners.ws", l.Address)] = fmt.Sprintf("listeners.ws[%d]", i)
	}
	containerPorts := map[int]bool{}
	for _, p := range c.Ports {
		containerPorts[p.ContainerPort] = true
		_, ok := listenerPorts[p.ContainerPort]
		check(fmt.Sprintf("container port %s %d is a listener's", p.Name, p.ContainerPort), ok, listenerPorts)
	}
	served := map[int]bool{}
	for _, p := range svc.Spec.Ports {
		target := c.port(t, p.TargetPort)
		served[target] = true
		_, ok := listenerPorts[target]
		check(fmt.Sprintf("Service port %s targets a listener", p.Name), ok && containerPorts[target], target)
	}
	for p, key := range listenerPorts {
		check(key+" is a container port", containerPorts[p], p)
		if key != "admin.listen" {
			check(key+" is a port of the Service tern", served[p], p)
		}
	}

	// The StatefulSet's Service is headless and selects its pods.
	gov := find(objs, "Service", sts.Spec.ServiceName)
	check("serviceName names a headless Service", gov != nil && gov.Spec.ClusterIP == "None", sts.Spec.ServiceName)
	for _, s := range []*object{svc, gov} {
		if s == nil {
			continue
		}
		var sel map[string]string
		if err := s.Spec.Selector.Decode(&sel); err != nil {
			t.Fatalf("Service %s: selector: %v", s.Metadata.Name, err)
		}
		for k, v := range sel {
			check("Service "+s.Metadata.Name+" selects the pods by "+k, sts.Spec.Template.Metadata.Labels[k] == v, v)
		}
	}

	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("%s: no (%v)", ch.what, ch.got)
		}
	}
}
