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
	root.SetArgs(joinPropertyArgs(args))
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
	if !strings.HasPrefix(got, "# users of site A\nzed:"+h+"\r\n\nalice:$7$210000$") || strings.Count(got, "alice:") != 1 || !strings.HasSuffix(got, "\n") {
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

// -H and -I choose the hash and its cost; the defaults follow OWASP.
func TestPasswdHashAndIterations(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	for _, tc := range []struct {
		args   []string
		prefix string
	}{
		{[]string{"-c", "-b", file, "u", "pw"}, "u:$7$210000$"},
		{[]string{"-b", "-I", "5000", file, "u", "pw"}, "u:$7$5000$"},
		{[]string{"-b", "-H", "argon2id", file, "u", "pw"}, "u:$argon2id$v=19$m=19456,t=2,p=1$"},
		{[]string{"-b", "-H", "argon2id", "-I", "3", file, "u", "pw"}, "u:$argon2id$v=19$m=19456,t=3,p=1$"},
		{[]string{"-b", "-H", "sha512", file, "u", "pw"}, "u:$6$"},
	} {
		if err := runTern(t, "", append([]string{"passwd"}, tc.args...)...); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got := readFile(t, file); !strings.HasPrefix(got, tc.prefix) {
			t.Errorf("%v: %q, want %s...", tc.args, got, tc.prefix)
		}
		p, err := auth.NewPasswordFile(file, auth.PasswordOptions{})
		if err != nil || !p.Check("u", "pw") {
			t.Errorf("%v: the password does not work (%v)", tc.args, err)
		}
	}
	for _, bad := range [][]string{{"-H", "md5"}, {"-I", "-1"}, {"-H", "argon2id", "-I", "1000"}} {
		if err := runTern(t, "", append(append([]string{"passwd"}, bad...), "-b", file, "u", "pw")...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// -U hashes a file of plain-text passwords in place, leaving hashes alone.
func TestPasswdUpdatePlainFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	h, _ := auth.HashPasswordWith("kept", auth.HashOptions{Iterations: 1000})
	os.WriteFile(file, []byte("# plain\nalice:a pw\nbob:b:with:colons\r\n\ncarol:"+h+"\n"), 0o644)
	var out bytes.Buffer
	root := rootCmd()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"passwd", "-U", "-I", "1000", file})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "2 passwords hashed, 1 already hashed") {
		t.Errorf("output %q", out.String())
	}
	got := readFile(t, file)
	if !strings.HasPrefix(got, "# plain\nalice:$7$1000$") || !strings.Contains(got, "\ncarol:"+h+"\n") || strings.Contains(got, "a pw") {
		t.Errorf("file is now:\n%s", got)
	}
	p, err := auth.NewPasswordFile(file, auth.PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for user, pw := range map[string]string{"alice": "a pw", "bob": "b:with:colons", "carol": "kept"} {
		if !p.Check(user, pw) {
			t.Errorf("%s: %q does not work", user, pw)
		}
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	if err := runTern(t, "", "passwd", "-U", file, "alice"); err == nil {
		t.Error("-U with a user name accepted")
	}
}
