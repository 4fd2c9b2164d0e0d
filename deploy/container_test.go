package deploy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/hooks/auth"
	"github.com/ternmq/tern/internal/config"
	"github.com/ternmq/tern/packets"
)

// imageUID is the user the image runs as (distroless "nonroot").
const imageUID = 65532

// The image's files fit the README's recipe without an engine: the
// Dockerfile has a HEALTHCHECK that runs tern healthcheck as its numeric
// non-root user, the configuration it copies in loads with the variables
// of the README's docker run lines, and the build context leaves out the
// broker's state and build outputs.
func TestDockerFiles(t *testing.T) {
	dockerfile, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what string
		in   []byte
		re   string
	}{
		{"HEALTHCHECK runs tern healthcheck", dockerfile, `(?m)^HEALTHCHECK .*\n?.*CMD \["/usr/local/bin/tern", "healthcheck"`},
		{"USER is the numeric non-root uid", dockerfile, fmt.Sprintf(`(?m)^USER %d:%d$`, imageUID, imageUID)},
		{"the data directory belongs to that user", dockerfile, fmt.Sprintf(`--chown=%d:%d /out/var/lib/tern /var/lib/tern`, imageUID, imageUID)},
		{".dockerignore leaves out tern-data", ignore, `(?m)^\*\*/tern-data/?$`},
		{".dockerignore leaves out the tern binary", ignore, `(?m)^/tern$`},
		{".dockerignore leaves out test binaries", ignore, `(?m)^\*\.test$`},
		{"README gives the password file to the image's user", readme, fmt.Sprintf(`chown %d:%d passwd`, imageUID, imageUID)},
	} {
		if !regexp.MustCompile(tc.re).Match(tc.in) {
			t.Errorf("%s: no match for %s", tc.what, tc.re)
		}
	}

	// Every docker run line of the README's Docker section gives
	// deploy/docker.yaml what it needs to start.
	section := string(readme)
	if i := strings.Index(section, "### Docker"); i >= 0 {
		section = section[i:]
	}
	if i := strings.Index(section, "\n### Kubernetes"); i >= 0 {
		section = section[:i]
	}
	runs := regexp.MustCompile(`docker run (?:[^\n]*\\\n)*[^\n]*`).FindAllString(section, -1)
	if len(runs) < 2 {
		t.Fatalf("README's Docker section: %d docker run commands, want 2", len(runs))
	}
	envRe := regexp.MustCompile(`-e (TERN_[A-Z_]+)=("[^"]*"|\S+)`)
	for _, run := range runs {
		var env []string
		for _, m := range envRe.FindAllStringSubmatch(run, -1) {
			v := strings.Trim(m[2], `"`)
			if strings.HasPrefix(v, "$(") {
				v = "0123456789abcdef0123456789abcdef" // openssl rand -hex 16
			}
			env = append(env, m[1]+"="+v)
		}
		if _, err := config.Load("docker.yaml", env, nil); err != nil {
			t.Errorf("%s\nwould not start: %v", run, err)
		}
	}
}

// engine is a container engine found on this machine, with the options
// it needs to run a container here.
type engine struct {
	name    string
	global  []string // before the command: podman --runtime runc ...
	runArgs []string // after run: --ulimit ...
	dir     string   // temporary files
}

// run runs the engine with args and returns its combined output.
func (e *engine) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.name, append(slices.Clone(e.global), args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// engineVariants are the ways of running a container tried in turn: as
// the engine is set up, then (podman) with cgroupfs, runc and resource
// limits below the sandbox's, as a machine without systemd and with
// cgroups v1 needs.
var engineVariants = []struct {
	engine          string
	global, runArgs []string
}{
	{"podman", nil, []string{"--read-only-tmpfs=false"}},
	{"podman", []string{"--cgroup-manager=cgroupfs", "--runtime", "runc"},
		[]string{"--read-only-tmpfs=false", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}},
	{"docker", nil, nil},
}

// usableEngine returns podman or docker when it can build and run a
// container here, or skips the test saying why not. Rootless engines, and
// engines in sandboxes that forbid setting resource limits, often cannot.
// CI does not depend on an engine: there the test runs only when
// TERN_CONTAINER_TEST=1.
func usableEngine(t *testing.T) *engine {
	t.Helper()
	switch {
	case testing.Short():
		t.Skip("-short: the container test builds an image")
	case os.Getenv("TERN_CONTAINER_TEST") == "0":
		t.Skip("TERN_CONTAINER_TEST=0")
	case os.Getenv("CI") != "" && os.Getenv("TERN_CONTAINER_TEST") != "1":
		t.Skip("CI does not depend on a container engine; TERN_CONTAINER_TEST=1 runs this test")
	}
	var why []string
	dir := t.TempDir()
	probe, err := buildProbe(dir)
	if err != nil {
		t.Fatal(err)
	}
	missing := map[string]bool{}
	for _, v := range engineVariants {
		if _, err := exec.LookPath(v.engine); err != nil {
			if !missing[v.engine] {
				why = append(why, v.engine+": not installed")
			}
			missing[v.engine] = true
			continue
		}
		e := &engine{name: v.engine, global: v.global, runArgs: v.runArgs, dir: dir}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := e.probe(ctx, probe)
		cancel()
		if err == nil {
			t.Logf("container engine: %s %s, run %s", e.name, strings.Join(e.global, " "), strings.Join(e.runArgs, " "))
			return e
		}
		why = append(why, fmt.Sprintf("%s %s: %v: %s", v.engine, strings.Join(v.global, " "), err, lastLine(out)))
	}
	t.Skipf("no container engine can run a container here (%s); the image is not built or run", strings.Join(why, "; "))
	return nil
}

// buildProbe builds a static program for probe in dir.
func buildProbe(dir string) (string, error) {
	src := filepath.Join(dir, "probe.go")
	if err := os.WriteFile(src, []byte("package main\n\nfunc main() { println(\"probe\") }\n"), 0o644); err != nil {
		return "", err
	}
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "probe"), src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the probe: %v: %s", err, out)
	}
	return "probe", nil
}

// probe builds and runs a container of one static program, which needs
// no base image and no registry.
func (e *engine) probe(ctx context.Context, program string) (string, error) {
	if out, err := e.run(ctx, "info"); err != nil {
		return out, fmt.Errorf("%s info", e.name)
	}
	file := filepath.Join(e.dir, "Containerfile.probe")
	os.WriteFile(file, []byte("FROM scratch\nCOPY "+program+" /probe\nENTRYPOINT [\"/probe\"]\n"), 0o644)
	tag := fmt.Sprintf("localhost/tern-probe:%d", os.Getpid())
	if out, err := e.run(ctx, "build", "-t", tag, "-f", file, e.dir); err != nil {
		return out, fmt.Errorf("%s build", e.name)
	}
	defer e.run(context.Background(), "rmi", "-f", tag)
	out, err := e.run(ctx, append(append([]string{"run", "--rm"}, e.runArgs...), tag)...)
	if err != nil || !strings.Contains(out, "probe") {
		return out, fmt.Errorf("%s run", e.name)
	}
	return out, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// The README's Docker recipe with the real image, where an engine runs
// here: a password file of mode 0600 owned by someone else stops the
// broker with a message naming uid 65532 and the mode; given to that user
// (the README's chown) it serves, the HEALTHCHECK's command reports it
// ready, a client logs in, and SIGTERM ends it with status 0.
func TestContainerImage(t *testing.T) {
	e := usableEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	tag := fmt.Sprintf("localhost/tern-test:%d", os.Getpid())
	if err := e.buildImage(ctx, t, tag); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.run(context.Background(), "rmi", "-f", tag) })
	t.Log("image built")
	if out, err := e.run(ctx, "image", "inspect", tag); err != nil || !strings.Contains(out, "healthcheck") {
		t.Errorf("the image has no HEALTHCHECK running tern healthcheck: %v", err)
	}

	hash, err := auth.HashPasswordIterations("secret-pw", 1000)
	if err != nil {
		t.Fatal(err)
	}
	passwd := filepath.Join(e.dir, "passwd")
	if err := os.WriteFile(passwd, []byte("alice:"+hash+"\n"), 0o600); err != nil { // as tern passwd writes it
		t.Fatal(err)
	}
	token := "0123456789abcdef0123456789abcdef"
	start := func(name string) (string, error) {
		t.Cleanup(func() {
			e.run(context.Background(), "rm", "-f", name)
			e.run(context.Background(), "volume", "rm", "-f", name+"-data")
		})
		args := append(append([]string{"run", "-d", "--name", name}, e.runArgs...),
			// As Kubernetes' readOnlyRootFilesystem (deploy/kubernetes): only
			// the volume is writable.
			"--read-only",
			"-p", "127.0.0.1::1883", "-p", "127.0.0.1::18083",
			"-v", name+"-data:/var/lib/tern", // a new volume takes the image's directory, owned by its user
			"-v", passwd+":/etc/tern/passwd:ro",
			"-e", "TERN_AUTH_PASSWORD_FILE=/etc/tern/passwd", "-e", "TERN_ADMIN_TOKEN="+token, tag)
		return e.run(ctx, args...)
	}
	wait := func(name string) string {
		out, _ := e.run(ctx, "wait", name)
		return lastLine(out)
	}
	base := fmt.Sprintf("tern-test-%d", os.Getpid())

	// The file as tern passwd leaves it: unreadable by uid 65532 unless
	// this test runs as that user.
	if os.Getuid() != imageUID {
		name := base + "-0600"
		if out, err := start(name); err != nil {
			t.Fatalf("run: %v: %s", err, out)
		}
		if code := wait(name); code == "0" {
			t.Error("the broker exited 0 with an unreadable password file")
		}
		logs, _ := e.run(ctx, "logs", name)
		switch {
		case strings.Contains(logs, "permission denied"):
			for _, want := range []string{fmt.Sprintf("uid %d", imageUID), "mode 0600", fmt.Sprintf("chown %d", imageUID)} {
				if !strings.Contains(logs, want) {
					t.Errorf("the error does not say %q:\n%s", want, logs)
				}
			}
		default:
			t.Logf("the engine maps users so that the file was readable; not checked:\n%s", logs)
		}
	}

	t.Log("unreadable password file checked")
	// The README's fix.
	if err := os.Chown(passwd, imageUID, imageUID); err != nil {
		if e.name != "podman" {
			t.Skipf("chown %d: %v (the test must run as root)", imageUID, err)
		}
		if out, err := e.run(ctx, "unshare", "chown", fmt.Sprintf("%d:%d", imageUID, imageUID), passwd); err != nil {
			t.Skipf("podman unshare chown: %v: %s", err, out)
		}
	}
	name := base + "-ok"
	if out, err := start(name); err != nil {
		t.Fatalf("run: %v: %s", err, out)
	}
	ready := false
	for i := 0; i < 60 && !ready; i++ { // at most about 30 s
		_, err := e.run(ctx, "exec", name, "/usr/local/bin/tern", "healthcheck", "--timeout", "1s")
		if ready = err == nil; !ready {
			time.Sleep(500 * time.Millisecond) // the container's state has no event to wait on
		}
	}
	if !ready {
		logs, _ := e.run(ctx, "logs", name)
		t.Fatalf("tern healthcheck never reported ready:\n%s", logs)
	}
	t.Log("ready")
	port, err := e.run(ctx, "port", name, "1883/tcp")
	if err != nil {
		t.Fatalf("port: %v: %s", err, port)
	}
	addr := lastLine(port)
	for _, tc := range []struct {
		user, password string
		want           packets.ReasonCode
	}{
		{"alice", "secret-pw", 0x00},
		{"alice", "wrong", 0x86}, // Bad user name or password
	} {
		if got := connect(t, addr, tc.user, tc.password); got != tc.want {
			t.Errorf("CONNECT as %s/%s: reason 0x%02x, want 0x%02x", tc.user, tc.password, byte(got), byte(tc.want))
		}
	}
	if out, err := e.run(ctx, "stop", "-t", "30", name); err != nil {
		t.Fatalf("stop: %v: %s", err, out)
	}
	if code := wait(name); code != "0" {
		logs, _ := e.run(ctx, "logs", name)
		t.Errorf("exit status after SIGTERM: %s\n%s", code, logs)
	}
}

// buildImage builds the Dockerfile as tag. When its base images are not
// here and cannot be pulled (no registry), it builds a stand-in instead:
// the Dockerfile's last stage on an empty base, with the files the build
// stage would have made (the static binary, deploy/docker.yaml, the data
// directory), so that everything the image does at run time is tested.
func (e *engine) buildImage(ctx context.Context, t *testing.T, tag string) error {
	dockerfile := mustRead(t, "../Dockerfile")
	missing := ""
	for _, m := range regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(dockerfile, -1) {
		if _, err := e.run(ctx, "image", "inspect", m[1]); err == nil {
			continue
		}
		if out, err := e.run(ctx, "pull", m[1]); err != nil {
			missing = m[1] + ": " + lastLine(out)
			break
		}
	}
	format := []string{}
	if e.name == "podman" {
		format = []string{"--format", "docker"} // keeps HEALTHCHECK
	}
	if missing == "" {
		if out, err := e.run(ctx, append(append([]string{"build", "-t", tag, "-f", "../Dockerfile"}, format...), "..")...); err != nil {
			return fmt.Errorf("%s build: %v\n%s", e.name, err, out)
		}
		return nil
	}
	t.Logf("base image %s; building a stand-in from the Dockerfile's last stage", missing)
	dir := filepath.Join(e.dir, "image")
	for _, d := range []string{"out/usr/local/bin", "out/etc/tern", "out/var/lib/tern"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(dir, "out/usr/local/bin/tern"), "../cmd/tern")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "out/etc/tern/tern.yaml"), []byte(mustRead(t, "docker.yaml")), 0o644); err != nil {
		return err
	}
	stages := regexp.MustCompile(`(?m)^FROM .*$`).FindAllStringIndex(dockerfile, -1)
	last := dockerfile[stages[len(stages)-1][1]:]
	last = regexp.MustCompile(`COPY --from=build (--chown=\S+ )?/out/`).ReplaceAllString(last, "COPY ${1}out/")
	if strings.Contains(last, "--from=") {
		return fmt.Errorf("the Dockerfile's last stage copies from something the stand-in does not make:\n%s", last)
	}
	if err := os.WriteFile(filepath.Join(dir, "Containerfile"), []byte("FROM scratch"+last), 0o644); err != nil {
		return err
	}
	if out, err := e.run(ctx, append(append([]string{"build", "-t", tag, "-f", filepath.Join(dir, "Containerfile")}, format...), dir)...); err != nil {
		return fmt.Errorf("%s build (stand-in): %v\n%s", e.name, err, out)
	}
	return nil
}

func mustRead(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// connect logs in to the broker at addr with MQTT 5 and returns the
// CONNACK's reason code.
func connect(t *testing.T, addr, user, password string) packets.ReasonCode {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, err := (&packets.Connect{ProtocolVersion: packets.V5, ClientID: "container-test", CleanStart: true,
		UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(password)}).Encode(nil, packets.V5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	pk, err := packets.ReadPacket(nc, packets.V5, 0)
	if err != nil {
		t.Fatal(err)
	}
	ack, ok := pk.(*packets.Connack)
	if !ok {
		t.Fatalf("answer to CONNECT: %T", pk)
	}
	return ack.ReasonCode
}
