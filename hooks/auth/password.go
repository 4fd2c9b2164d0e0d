package auth

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
)

// PasswordOptions configures a PasswordFile.
type PasswordOptions struct {
	// AllowAnonymous lets clients that send no user name connect
	// (mosquitto's allow_anonymous). Default false: they are refused.
	AllowAnonymous bool
	// NoCache turns the cache of verified passwords off, so that every
	// login pays the hash's full cost (see PasswordFile).
	NoCache bool
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
//
// A hash costly enough to resist attacks on a stolen file (210,000 rounds
// of PBKDF2, tens of milliseconds) would cap the rate of logins, so the
// last password verified for each user is remembered, as an HMAC-SHA256
// under a random key of the process's: a client that logs in again with
// it is checked in a microsecond. A wrong password always pays the full
// cost, and a reload forgets everything. (Someone who can read the
// broker's memory could test guesses against a remembered HMAC faster than
// against the hash; NoCache turns the cache off.)
type PasswordFile struct {
	path  string
	opts  PasswordOptions
	key   [32]byte // HMAC key of the verified passwords
	table atomic.Pointer[passwordTable]
}

// passwordTable is one load of the file: its users and the passwords
// verified against them since.
type passwordTable struct {
	users    map[string]passwordHash
	verified sync.Map // user name -> [32]byte HMAC of the last password verified
}

var _ tern.Authenticator = (*PasswordFile)(nil)

// NewPasswordFile loads the password file at path.
func NewPasswordFile(path string, opts PasswordOptions) (*PasswordFile, error) {
	p := &PasswordFile{path: path, opts: opts}
	rand.Read(p.key[:])
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
	p.table.Store(&passwordTable{users: users})
	return nil
}

// Len returns the number of users loaded.
func (p *PasswordFile) Len() int { return len(p.table.Load().users) }

// dummy is verified against for unknown users, so that a name's presence
// in the file does not show in how long the answer takes.
var dummy = sync.OnceValue(func() passwordHash {
	h, _ := HashPassword("")
	ph, _ := parseHash(h)
	return ph
})

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
	if _, known := p.table.Load().users[pk.Username]; known {
		return tern.Deny
	}
	return tern.Abstain
}

// Check reports whether username is in the file and password is its
// password.
func (p *PasswordFile) Check(username, password string) bool {
	t := p.table.Load()
	h, ok := t.users[username]
	if !ok {
		d := dummy()
		verifyBounded(&d, password)
		return false
	}
	if p.opts.NoCache {
		return verifyBounded(&h, password)
	}
	mac := hmac.New(sha256.New, p.key[:])
	mac.Write([]byte(password))
	var sum [32]byte
	mac.Sum(sum[:0])
	if v, ok := t.verified.Load(username); ok {
		known := v.([32]byte)
		if subtle.ConstantTimeCompare(known[:], sum[:]) == 1 {
			return true
		}
	}
	if !verifyBounded(&h, password) {
		return false
	}
	t.verified.Store(username, sum)
	return true
}

// hashSlots bounds the password hashes computed at once: they are CPU
// work (and argon2id's take 19 MiB each), so a storm of logins after a
// restart queues here rather than holding memory for each.
var hashSlots = make(chan struct{}, max(runtime.GOMAXPROCS(0), 2))

func verifyBounded(h *passwordHash, password string) bool {
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
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
