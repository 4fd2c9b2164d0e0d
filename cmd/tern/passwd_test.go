package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ternmq/tern/hooks/auth"
)

// runTern runs the tern command with args and stdin, returning its error.
func runTern(t *testing.T, stdin string, args ...string) error {
	t.Helper()
	root := rootCmd()
	var out bytes.Buffer
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	return root.Execute()
}

func TestPasswd(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	steps := []struct {
		name    string
		stdin   string
		args    []string
		wantErr string
		users   map[string]string // user -> password expected to work afterwards ("" = absent)
	}{
		{name: "add to a missing file", args: []string{"-b", file, "alice", "a"}, wantErr: "does not exist"},
		{name: "create", args: []string{"-c", "-b", file, "alice", "a"}, users: map[string]string{"alice": "a"}},
		{name: "add from stdin", stdin: "b pw\nb pw\n", args: []string{file, "bob"}, users: map[string]string{"alice": "a", "bob": "b pw"}},
		{name: "stdin one line", stdin: "c\n", args: []string{file, "carol"}, users: map[string]string{"carol": "c"}},
		{name: "stdin mismatch", stdin: "x\ny\n", args: []string{file, "carol"}, wantErr: "do not match", users: map[string]string{"carol": "c"}},
		{name: "update", args: []string{"-b", file, "alice", "a2"}, users: map[string]string{"alice": "a2", "bob": "b pw"}},
		{name: "delete", args: []string{"-D", file, "bob"}, users: map[string]string{"alice": "a2", "bob": ""}},
		{name: "delete unknown", args: []string{"-D", file, "bob"}, wantErr: "not in"},
		{name: "-c with -D", args: []string{"-c", "-D", file, "alice"}, wantErr: "cannot be used together"},
		{name: "-b without password", args: []string{"-b", file, "alice"}, wantErr: "needs the password"},
		{name: "password without -b", args: []string{file, "alice", "pw"}, wantErr: "needs -b"},
		{name: "colon in user name", args: []string{"-b", file, "a:b", "pw"}, wantErr: "':'"},
		{name: "empty password", args: []string{"-b", file, "dave", ""}, wantErr: "empty password"},
		{name: "create replaces", args: []string{"-c", "-b", file, "erin", "e"}, users: map[string]string{"erin": "e", "alice": ""}},
	}
	for _, st := range steps {
		err := runTern(t, st.stdin, append([]string{"passwd"}, st.args...)...)
		if st.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), st.wantErr) {
				t.Fatalf("%s: error %v, want %q", st.name, err, st.wantErr)
			}
		} else if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.users == nil {
			continue
		}
		p, err := auth.NewPasswordFile(file, auth.PasswordOptions{})
		if err != nil {
			t.Fatalf("%s: the file does not load: %v", st.name, err)
		}
		for user, pw := range st.users {
			if pw == "" {
				if p.Check(user, "") || strings.Contains(readFile(t, file), user+":") {
					t.Errorf("%s: %s still in the file", st.name, user)
				}
				continue
			}
			if !p.Check(user, pw) {
				t.Errorf("%s: %s's password %q does not work", st.name, user, pw)
			}
		}
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".passwd.tmp*")); len(matches) != 0 {
		t.Errorf("temporary files left: %v", matches)
	}
}

func TestPasswdKeepsOtherLines(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	h, _ := auth.HashPassword("x")
	os.WriteFile(file, []byte("# users of site A\nzed:"+h+"\r\n\nalice:"+h), 0o644)
	if err := runTern(t, "", "passwd", "-b", file, "alice", "new"); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, file)
	if !strings.HasPrefix(got, "# users of site A\nzed:"+h+"\r\n\nalice:$7$101$") || strings.Count(got, "alice:") != 1 || !strings.HasSuffix(got, "\n") {
		t.Errorf("file is now:\n%s", got)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
