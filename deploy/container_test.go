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
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/config"
	"github.com/ternmq/tern/hooks/auth"
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

// engine is a container engine found on this machine.
type engine struct {
	name string
	dir  string // temporary files
}

// run runs the engine with args and returns its combined output.
func (e *engine) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// usableEngine returns podman or docker when it can build and run a
// container here, or skips the test saying why not. Rootless engines, and
// engines in sandboxes that forbid setting resource limits, often cannot.
func usableEngine(t *testing.T) *engine {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the container test builds an image")
	}
	if os.Getenv("TERN_CONTAINER_TEST") == "0" {
		t.Skip("TERN_CONTAINER_TEST=0")
	}
	var why []string
	for _, name := range []string{"podman", "docker"} {
		if _, err := exec.LookPath(name); err != nil {
			why = append(why, name+": not installed")
			continue
		}
		e := &engine{name: name, dir: t.TempDir()}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := e.probe(ctx)
		cancel()
		if err == nil {
			return e
		}
		why = append(why, fmt.Sprintf("%s: %v: %s", name, err, lastLine(out)))
	}
	t.Skipf("no container engine can run a container here (%s); the image is not built or run", strings.Join(why, "; "))
	return nil
}

// probe builds and runs a container of one static program, which needs
// no base image and no registry.
func (e *engine) probe(ctx context.Context) (string, error) {
	if out, err := e.run(ctx, "info"); err != nil {
		return out, fmt.Errorf("%s info", e.name)
	}
	src := filepath.Join(e.dir, "probe.go")
	os.WriteFile(src, []byte("package main\n\nfunc main() { println(\"probe\") }\n"), 0o644)
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(e.dir, "probe"), src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return string(out), fmt.Errorf("building the probe")
	}
	os.WriteFile(filepath.Join(e.dir, "Containerfile"), []byte("FROM scratch\nCOPY probe /probe\nENTRYPOINT [\"/probe\"]\n"), 0o644)
	tag := fmt.Sprintf("localhost/tern-probe:%d", os.Getpid())
	if out, err := e.run(ctx, "build", "-t", tag, "-f", filepath.Join(e.dir, "Containerfile"), e.dir); err != nil {
		return out, fmt.Errorf("%s build", e.name)
	}
	defer e.run(context.Background(), "rmi", "-f", tag)
	out, err := e.run(ctx, "run", "--rm", tag)
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

	// The base images come from a registry this machine may not reach.
	from := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(mustRead(t, "../Dockerfile"), -1)
	for _, m := range from {
		if _, err := e.run(ctx, "image", "inspect", m[1]); err == nil {
			continue
		}
		if out, err := e.run(ctx, "pull", m[1]); err != nil {
			t.Skipf("base image %s is not here and cannot be pulled: %s", m[1], lastLine(out))
		}
	}
	tag := fmt.Sprintf("localhost/tern-test:%d", os.Getpid())
	args := []string{"build", "-t", tag, "-f", "../Dockerfile"}
	if e.name == "podman" {
		args = append(args, "--format", "docker") // keeps HEALTHCHECK
	}
	if out, err := e.run(ctx, append(args, "..")...); err != nil {
		t.Fatalf("%s build: %v\n%s", e.name, err, out)
	}
	t.Cleanup(func() { e.run(context.Background(), "rmi", "-f", tag) })

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
		t.Cleanup(func() { e.run(context.Background(), "rm", "-f", name) })
		return e.run(ctx, "run", "-d", "--name", name,
			"-p", "127.0.0.1::1883", "-p", "127.0.0.1::18083",
			"-v", passwd+":/etc/tern/passwd:ro",
			"-e", "TERN_AUTH_PASSWORD_FILE=/etc/tern/passwd", "-e", "TERN_ADMIN_TOKEN="+token, tag)
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
