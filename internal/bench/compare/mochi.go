package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// mochiModule is the module path of mochi-mqtt v2.
const mochiModule = "github.com/mochi-mqtt/server/v2"

// mochiMain is the broker program built around mochi-mqtt: a TCP listener,
// an allow-all authentication hook, warnings and errors to stderr. Flag
// -writes-pending sets mochi's MaximumClientWritesPending, the length of
// each client's outbound queue beyond which mochi drops messages (its
// default is 8,192).
const mochiMain = `// Command mochi-broker runs mochi-mqtt for bench/compare.
package main

import (
	"flag"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP address")
	pending := flag.Int("writes-pending", 0, "MaximumClientWritesPending; 0 keeps mochi's default")
	flag.Parse()
	caps := mqtt.NewDefaultServerCapabilities()
	if *pending > 0 {
		caps.MaximumClientWritesPending = int32(*pending)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := mqtt.New(&mqtt.Options{Capabilities: caps, Logger: logger})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		log.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: *addr})); err != nil {
		log.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	srv.Close()
}
`

// buildMochi writes the mochi broker program into its own module under
// dir, resolves the newest mochi release matching want (a version such as
// "v2.7.9", or a prefix such as "v2.7" for its latest patch), builds it and
// returns the binary's path and the version used.
func buildMochi(ctx context.Context, dir, want string) (bin, version string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	goMod := "module mochibroker\n\ngo 1.26\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(goMod), 0o644); err != nil {
		return "", "", err
	}
	os.Remove(filepath.Join(dir, "go.sum"))
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(mochiMain), 0o644); err != nil {
		return "", "", err
	}
	version = want
	if strings.Count(want, ".") < 2 {
		out, err := goCmd(ctx, dir, "list", "-m", "-versions", mochiModule)
		if err != nil {
			return "", "", fmt.Errorf("listing mochi versions: %w", err)
		}
		version = latestMatching(strings.Fields(out), want)
		if version == "" {
			return "", "", fmt.Errorf("no mochi version matches %s in %q", want, out)
		}
	}
	if _, err := goCmd(ctx, dir, "get", mochiModule+"@"+version); err != nil {
		return "", "", err
	}
	if _, err := goCmd(ctx, dir, "mod", "tidy"); err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "mochi-broker")
	if _, err := goCmd(ctx, dir, "build", "-o", bin, "."); err != nil {
		return "", "", err
	}
	return bin, version, nil
}

// latestMatching returns the highest release version ("vX.Y.Z", no
// pre-release) in list that equals prefix or starts with prefix + ".", or
// "" if none does.
func latestMatching(list []string, prefix string) string {
	best, bestNum := "", [3]int{-1}
	for _, v := range list {
		num, ok := parseRelease(v)
		if !ok || v != prefix && !strings.HasPrefix(v, prefix+".") {
			continue
		}
		if best == "" || num[0] > bestNum[0] ||
			num[0] == bestNum[0] && (num[1] > bestNum[1] || num[1] == bestNum[1] && num[2] > bestNum[2]) {
			best, bestNum = v, num
		}
	}
	return best
}

// parseRelease parses "vX.Y.Z".
func parseRelease(v string) ([3]int, bool) {
	var num [3]int
	parts := strings.Split(strings.TrimPrefix(v, "v"), ".")
	if !strings.HasPrefix(v, "v") || len(parts) != 3 {
		return num, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return num, false
		}
		num[i] = n
	}
	return num, true
}

// goCmd runs the go command in dir, outside any workspace, and returns its
// standard output.
func goCmd(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}
