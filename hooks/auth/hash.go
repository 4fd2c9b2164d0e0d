package auth

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Hash algorithms, named as mosquitto_passwd -H names them.
const (
	// PBKDF2SHA512 is "$7$iterations$salt$hash", PBKDF2-HMAC-SHA512, which
	// Mosquitto 2.0 and later read. The default.
	PBKDF2SHA512 = "sha512-pbkdf2"
	// Argon2id is "$argon2id$v=19$m=KiB,t=passes,p=threads$salt$hash", the
	// PHC string format, which Mosquitto 2.1 reads.
	Argon2id = "argon2id"
	// SaltedSHA512 is "$6$salt$hash", one round of salted SHA-512, for
	// Mosquitto 1.6 and older only: it is fast to attack.
	SaltedSHA512 = "sha512"
)

// Costs of the hashes written by HashPassword: those of OWASP's Password
// Storage Cheat Sheet (2023) for each algorithm. Any cost is read.
const (
	// DefaultIterations is the PBKDF2-HMAC-SHA512 iteration count, 210,000.
	// (mosquitto_passwd 2.0 writes 101, MosquittoIterations.)
	DefaultIterations = 210_000
	// MosquittoIterations is what mosquitto_passwd 2.0 writes.
	MosquittoIterations = 101
	// DefaultArgon2Passes, DefaultArgon2Memory (KiB) and
	// DefaultArgon2Threads are argon2id's t, m and p: 2 passes over 19 MiB,
	// one thread.
	DefaultArgon2Passes  = 2
	DefaultArgon2Memory  = 19 * 1024
	DefaultArgon2Threads = 1

	SaltSize = 12 // bytes of random salt ($7$, $6$; argon2id uses 16)

	hashSize      = sha512.Size
	maxIterations = 10_000_000
)

// ErrUnsupportedHash reports a password hash in a format this package does
// not know: only Mosquitto's "$7$" (PBKDF2-SHA512), "$6$" (salted
// SHA-512) and "$argon2id$" are supported.
var ErrUnsupportedHash = errors.New("auth: unsupported password hash (want $7$, $6$ or $argon2id$)")

// passwordHash is a parsed password hash.
type passwordHash struct {
	kind       byte   // '7', '6' or 'a' (argon2id)
	iterations uint32 // PBKDF2 iterations; argon2id passes
	memory     uint32 // argon2id KiB
	threads    uint8  // argon2id
	salt       []byte
	sum        []byte
}

// HashOptions choose the algorithm and cost of a new hash.
type HashOptions struct {
	// Algorithm is PBKDF2SHA512 (the default, ""), Argon2id or SaltedSHA512.
	Algorithm string
	// Iterations is PBKDF2's iteration count or argon2id's passes; 0: the
	// default (DefaultIterations, DefaultArgon2Passes).
	Iterations int
}

// HashPassword returns password hashed with PBKDF2-SHA512 at
// DefaultIterations, with a 12-byte random salt, in Mosquitto's format:
// "$7$210000$<base64 salt>$<base64 hash>".
func HashPassword(password string) (string, error) {
	return HashPasswordWith(password, HashOptions{})
}

// HashPasswordIterations is HashPassword with a chosen iteration count.
func HashPasswordIterations(password string, iterations int) (string, error) {
	return HashPasswordWith(password, HashOptions{Iterations: iterations})
}

// HashPasswordWith hashes password with the algorithm and cost chosen.
func HashPasswordWith(password string, o HashOptions) (string, error) {
	b64 := base64.StdEncoding.EncodeToString
	switch o.Algorithm {
	case "", PBKDF2SHA512:
		n := o.Iterations
		if n == 0 {
			n = DefaultIterations
		}
		if n < 1 || n > maxIterations {
			return "", fmt.Errorf("auth: iterations %d out of range (1 to %d)", n, maxIterations)
		}
		salt, err := randomSalt(SaltSize)
		if err != nil {
			return "", err
		}
		sum, err := pbkdf2.Key(sha512.New, password, salt, n, hashSize)
		if err != nil {
			return "", err
		}
		return "$7$" + strconv.Itoa(n) + "$" + b64(salt) + "$" + b64(sum), nil
	case Argon2id:
		t := o.Iterations
		if t == 0 {
			t = DefaultArgon2Passes
		}
		if t < 1 || t > maxArgon2Passes {
			return "", fmt.Errorf("auth: argon2id passes %d out of range (1 to %d)", t, maxArgon2Passes)
		}
		salt, err := randomSalt(16)
		if err != nil {
			return "", err
		}
		sum := argon2.IDKey([]byte(password), salt, uint32(t), DefaultArgon2Memory, DefaultArgon2Threads, 32)
		raw := base64.RawStdEncoding.EncodeToString
		return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, DefaultArgon2Memory, t,
			DefaultArgon2Threads, raw(salt), raw(sum)), nil
	case SaltedSHA512:
		salt, err := randomSalt(SaltSize)
		if err != nil {
			return "", err
		}
		d := sha512.New()
		d.Write([]byte(password))
		d.Write(salt)
		return "$6$" + b64(salt) + "$" + b64(d.Sum(nil)), nil
	}
	return "", fmt.Errorf("auth: unknown hash %q (want %s, %s or %s)", o.Algorithm, PBKDF2SHA512, Argon2id, SaltedSHA512)
}

func randomSalt(n int) ([]byte, error) {
	salt := make([]byte, n)
	_, err := rand.Read(salt)
	return salt, err
}

// IsHash reports whether s is a password hash this package reads.
func IsHash(s string) bool {
	_, err := parseHash(s)
	return err == nil
}

// VerifyPassword reports whether password matches hash, a "$7$", "$6$"
// or "$argon2id$" hash as in a Mosquitto password file. The comparison
// takes constant time.
func VerifyPassword(hash, password string) (bool, error) {
	h, err := parseHash(hash)
	if err != nil {
		return false, err
	}
	return h.verify(password), nil
}

// Bounds on the argon2id parameters read, so that a password file cannot
// make each login take a second or a gigabyte.
const (
	maxArgon2Passes = 100
	maxArgon2Memory = 1 << 20 // KiB: 1 GiB
)

// parseHash parses "$7$iterations$salt$hash", "$6$salt$hash" or
// "$argon2id$v=19$m=..,t=..,p=..$salt$hash".
func parseHash(s string) (passwordHash, error) {
	var h passwordHash
	parts := strings.Split(s, "$")
	if len(parts) < 4 || parts[0] != "" {
		return h, ErrUnsupportedHash
	}
	var salt, sum string
	switch {
	case parts[1] == "7" && len(parts) == 5:
		n, err := strconv.Atoi(parts[2])
		if err != nil || n < 1 || n > maxIterations {
			return h, fmt.Errorf("auth: bad iteration count %q", parts[2])
		}
		h.kind, h.iterations, salt, sum = '7', uint32(n), parts[3], parts[4]
	case parts[1] == "6" && len(parts) == 4:
		h.kind, salt, sum = '6', parts[2], parts[3]
	case parts[1] == "argon2id" && len(parts) == 6:
		if parts[2] != "v="+strconv.Itoa(argon2.Version) {
			return h, fmt.Errorf("auth: argon2id version %q not supported (want v=%d)", parts[2], argon2.Version)
		}
		var m, t, p uint64
		if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil ||
			m < 8 || m > maxArgon2Memory || t < 1 || t > maxArgon2Passes || p < 1 || p > 255 || m < 8*p {
			return h, fmt.Errorf("auth: bad argon2id parameters %q", parts[3])
		}
		h.kind, h.memory, h.iterations, h.threads, salt, sum = 'a', uint32(m), uint32(t), uint8(p), parts[4], parts[5]
	default:
		return h, ErrUnsupportedHash
	}
	var err error
	if h.salt, err = decodeBase64(salt); err != nil || len(h.salt) == 0 {
		return h, errors.New("auth: bad salt encoding")
	}
	h.sum, err = decodeBase64(sum)
	if h.kind == 'a' {
		if err != nil || len(h.sum) < 16 || len(h.sum) > 128 {
			return h, errors.New("auth: bad hash encoding")
		}
	} else if err != nil || len(h.sum) != hashSize {
		return h, errors.New("auth: bad hash encoding")
	}
	return h, nil
}

func decodeBase64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// verify compares password against the hash in constant time.
func (h *passwordHash) verify(password string) bool {
	verifications.Add(1)
	var sum []byte
	switch h.kind {
	case '7':
		var err error
		if sum, err = pbkdf2.Key(sha512.New, password, h.salt, int(h.iterations), hashSize); err != nil {
			return false
		}
	case 'a':
		sum = argon2.IDKey([]byte(password), h.salt, h.iterations, h.memory, h.threads, uint32(len(h.sum)))
	default:
		d := sha512.New()
		d.Write([]byte(password))
		d.Write(h.salt)
		sum = d.Sum(nil)
	}
	return subtle.ConstantTimeCompare(sum, h.sum) == 1
}
