package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustHash(t *testing.T, pw string) string {
	t.Helper()
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// testdata/mosquitto.passwd was written by Debian's mosquitto_passwd 2.0.11
// (carol with -H sha512).
func TestPasswordFileFromMosquitto(t *testing.T) {
	p, err := NewPasswordFile("testdata/mosquitto.passwd", PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user, password string
		want           bool
	}{
		{user: "alice", password: "correct horse", want: true},
		{user: "alice", password: "correct horse "},
		{user: "bob", password: "b0b:pa$$", want: true},
		{user: "carol", password: "carol", want: true},
		{user: "carol", password: "Carol"},
		{user: "dave smith", password: "üñí", want: true},
		{user: "mallory", password: "correct horse"},
	}
	for _, tt := range tests {
		if got := p.Check(tt.user, tt.password); got != tt.want {
			t.Errorf("Check(%q, %q) = %v, want %v", tt.user, tt.password, got, tt.want)
		}
	}
}

func TestPasswordFileAuthenticate(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "passwd", "# users\n\nalice:"+mustHash(t, "wonderland")+"\r\n")
	strict, err := NewPasswordFile(path, PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	open, err := NewPasswordFile(path, PasswordOptions{AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		hook *PasswordFile
		pk   packets.Connect
		want tern.Decision
	}{
		{name: "right password", hook: strict, pk: packets.Connect{UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("wonderland")}, want: tern.Allow},
		{name: "wrong password", hook: strict, pk: packets.Connect{UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("x")}, want: tern.Deny},
		{name: "no password", hook: strict, pk: packets.Connect{UsernameFlag: true, Username: "alice"}, want: tern.Deny},
		{name: "unknown user abstains", hook: strict, pk: packets.Connect{UsernameFlag: true, Username: "bob", PasswordFlag: true, Password: []byte("wonderland")}, want: tern.Abstain},
		{name: "anonymous denied", hook: strict, pk: packets.Connect{}, want: tern.Deny},
		{name: "anonymous allowed", hook: open, pk: packets.Connect{}, want: tern.Allow},
		{name: "allow anonymous still checks passwords", hook: open, pk: packets.Connect{UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("x")}, want: tern.Deny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.hook.Authenticate(&tern.Client{}, &tt.pk); got != tt.want {
				t.Errorf("Authenticate = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPasswordFileReload(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "passwd", "alice:"+mustHash(t, "one")+"\n")
	p, err := NewPasswordFile(path, PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := []string{
		"alice:plaintext\n",
		"alice\n",
		"alice:" + mustHash(t, "two") + "\nalice:" + mustHash(t, "three") + "\n",
		":" + mustHash(t, "two") + "\n",
	}
	for _, content := range bad {
		writeFile(t, dir, "passwd", content)
		if err := p.Reload(); err == nil {
			t.Errorf("Reload of %q gave no error", content)
		}
		if !p.Check("alice", "one") {
			t.Fatalf("after a failed reload of %q the old table is gone", content)
		}
	}
	os.Remove(path)
	if err := p.Reload(); err == nil || !p.Check("alice", "one") {
		t.Fatalf("Reload of a missing file: err %v; old table kept: %v", err, p.Check("alice", "one"))
	}
	writeFile(t, dir, "passwd", "alice:"+mustHash(t, "two")+"\nbob:"+mustHash(t, "b")+"\n")
	if err := p.Reload(); err != nil {
		t.Fatal(err)
	}
	if p.Check("alice", "one") || !p.Check("alice", "two") || !p.Check("bob", "b") || p.Len() != 2 {
		t.Error("Reload did not replace the table")
	}
}

func TestPasswordFileErrorsNameTheLine(t *testing.T) {
	path := writeFile(t, t.TempDir(), "passwd", "# c\nalice:"+mustHash(t, "a")+"\nbob:$argon2id$v=19$x\n")
	_, err := NewPasswordFile(path, PasswordOptions{})
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "bob") {
		t.Fatalf("error %v does not name line 3 and bob", err)
	}
}
