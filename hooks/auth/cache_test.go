package auth

import (
	"os"
	"path/filepath"
	"testing"
)

// A verified password is remembered: logging in again with it computes no
// hash; a wrong password always does; a reload forgets; NoCache
// remembers nothing.
func TestVerifiedPasswordsCached(t *testing.T) {
	h, err := HashPasswordWith("right", HashOptions{Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(file, []byte("alice:"+h+"\n"), 0o600)
	for _, noCache := range []bool{false, true} {
		p, err := NewPasswordFile(file, PasswordOptions{NoCache: noCache})
		if err != nil {
			t.Fatal(err)
		}
		hashes := func(f func()) int64 {
			before := verifications.Load()
			f()
			return verifications.Load() - before
		}
		check := func(pw string, want bool) {
			t.Helper()
			if p.Check("alice", pw) != want {
				t.Fatalf("Check(alice, %q) != %v", pw, want)
			}
		}
		want := int64(0)
		if noCache {
			want = 1
		}
		if n := hashes(func() { check("right", true) }); n != 1 {
			t.Errorf("first login: %d hashes, want 1", n)
		}
		if n := hashes(func() { check("right", true) }); n != want {
			t.Errorf("second login (NoCache %v): %d hashes, want %d", noCache, n, want)
		}
		if n := hashes(func() { check("wrong", false); check("wrong", false) }); n != 2 {
			t.Errorf("wrong passwords: %d hashes, want 2", n)
		}
		if n := hashes(func() { check("right", true) }); n != want {
			t.Errorf("after wrong ones: %d hashes, want %d", n, want)
		}
		// The password changes in the file: the remembered one is forgotten.
		h2, _ := HashPasswordWith("new", HashOptions{Iterations: 1000})
		os.WriteFile(file, []byte("alice:"+h2+"\n"), 0o600)
		if err := p.Reload(); err != nil {
			t.Fatal(err)
		}
		check("right", false)
		check("new", true)
		os.WriteFile(file, []byte("alice:"+h+"\n"), 0o600)
		p.Reload()
	}
}
