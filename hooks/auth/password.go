package auth

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
)

// PasswordOptions configures a PasswordFile.
type PasswordOptions struct {
	// AllowAnonymous lets clients that send no user name connect
	// (mosquitto's allow_anonymous). Default false: they are refused.
	AllowAnonymous bool
}

// PasswordFile is an Authenticator checking user names and passwords
// against a Mosquitto-format password file: one "username:hash" per line,
// "#" comments and blank lines ignored. Its decisions:
//
//   - a connection with a verified certificate identity (see [Username]):
//     Allow, the certificate having authenticated the client;
//   - a connection made in the process (tern.Server.DialInProcess, such as
//     a bridge's local side) without a user name: Allow;
//   - no user name: Allow with AllowAnonymous, else Deny;
//   - a user in the file: Allow when the password matches, else Deny;
//   - a user not in the file: Abstain, so that another authenticator may
//     decide; the server refuses a client every authenticator abstains on.
//
// It is safe for concurrent use; Reload swaps the whole table at once.
type PasswordFile struct {
	path  string
	opts  PasswordOptions
	users atomic.Pointer[map[string]passwordHash]
}

var _ tern.Authenticator = (*PasswordFile)(nil)

// NewPasswordFile loads the password file at path.
func NewPasswordFile(path string, opts PasswordOptions) (*PasswordFile, error) {
	p := &PasswordFile{path: path, opts: opts}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// ID implements tern.Hook.
func (p *PasswordFile) ID() string { return "password-file" }

// Reload re-reads the file. If it cannot be read or parsed, the users
// loaded before stay in force and the error is returned.
func (p *PasswordFile) Reload() error {
	data, err := os.ReadFile(p.path)
	if err != nil {
		return fmt.Errorf("auth: reading password file: %w", err)
	}
	users, err := parsePasswords(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("auth: %s: %w", p.path, err)
	}
	p.users.Store(&users)
	return nil
}

// Len returns the number of users loaded.
func (p *PasswordFile) Len() int { return len(*p.users.Load()) }

// dummy is verified against for unknown users, so that a name's presence
// in the file does not show in how long the answer takes.
var dummy = func() passwordHash {
	h, _ := HashPassword("")
	ph, _ := parseHash(h)
	return ph
}()

// Authenticate implements tern.Authenticator.
func (p *PasswordFile) Authenticate(c *tern.Client, pk *packets.Connect) tern.Decision {
	if identity(c) != "" || c.Listener() == tern.InProcessListener && pk.Username == "" {
		return tern.Allow
	}
	if pk.Username == "" {
		if p.opts.AllowAnonymous {
			return tern.Allow
		}
		return tern.Deny
	}
	if p.Check(pk.Username, string(pk.Password)) {
		return tern.Allow
	}
	if _, known := (*p.users.Load())[pk.Username]; known {
		return tern.Deny
	}
	return tern.Abstain
}

// Check reports whether username is in the file and password is its
// password.
func (p *PasswordFile) Check(username, password string) bool {
	h, ok := (*p.users.Load())[username]
	if !ok {
		dummy.verify(password)
		return false
	}
	return h.verify(password)
}

// parsePasswords reads "username:hash" lines.
func parsePasswords(r io.Reader) (map[string]passwordHash, error) {
	users := make(map[string]passwordHash)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if t := strings.TrimSpace(line); t == "" || t[0] == '#' {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d: want username:hash", n)
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("line %d: user %q appears twice", n, name)
		}
		h, err := parseHash(strings.TrimSpace(hash))
		if err != nil {
			return nil, fmt.Errorf("line %d (user %q): %w", n, name, err)
		}
		users[name] = h
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return users, nil
}
