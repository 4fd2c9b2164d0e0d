// Package testbin builds the tern binary for tests that run it as a child
// process (crash, bridge and cluster tests): once per test process, into a
// temporary directory that Cleanup removes.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Tern returns the path of a tern binary built from cmd/tern, building it
// on the first call. With TERN_TEST_RACE=1 (or the crash tests' older
// TERN_CRASH_RACE=1) it is built with the race detector.
func Tern(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			build.err = err
			return
		}
		if build.dir, build.err = os.MkdirTemp("", "tern-test-bin-"); build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "tern")
		args := []string{"build", "-o", build.path}
		if os.Getenv("TERN_TEST_RACE") == "1" || os.Getenv("TERN_CRASH_RACE") == "1" {
			args = append(args, "-race")
		}
		out, err := exec.Command(gobin, append(args, "github.com/ternmq/tern/cmd/tern")...).CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build ./cmd/tern: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// Cleanup removes the binary; call it from TestMain after m.Run.
func Cleanup() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}
