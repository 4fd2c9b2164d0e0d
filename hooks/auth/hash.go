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
)

// Parameters of the hashes written by HashPassword, as mosquitto_passwd
// 2.0 writes them, so that Mosquitto can read Tern's password files.
const (
	DefaultIterations = 101 // PBKDF2 iterations
	SaltSize          = 12  // bytes of random salt
	hashSize          = sha512.Size
	maxIterations     = 10_000_000
)

// ErrUnsupportedHash reports a password hash in a format this package does
// not know: only Mosquitto's "$7$" (PBKDF2-SHA512) and "$6$" (salted
// SHA-512) are supported.
var ErrUnsupportedHash = errors.New("auth: unsupported password hash (want $7$ or $6$)")

// passwordHash is a parsed password hash.
type passwordHash struct {
	iterations int // 0 for "$6$"
	salt       []byte
	sum        []byte
}

// HashPassword returns password hashed as mosquitto_passwd does by
// default: "$7$101$<base64 salt>$<base64 PBKDF2-SHA512 hash>", with a
// 12-byte random salt.
func HashPassword(password string) (string, error) {
	return HashPasswordIterations(password, DefaultIterations)
}

// HashPasswordIterations is HashPassword with a chosen iteration count.
func HashPasswordIterations(password string, iterations int) (string, error) {
	if iterations < 1 || iterations > maxIterations {
		return "", fmt.Errorf("auth: iterations %d out of range", iterations)
	}
	salt := make([]byte, SaltSize)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	sum, err := pbkdf2.Key(sha512.New, password, salt, iterations, hashSize)
	if err != nil {
		return "", err
	}
	return "$7$" + strconv.Itoa(iterations) + "$" + base64.StdEncoding.EncodeToString(salt) +
		"$" + base64.StdEncoding.EncodeToString(sum), nil
}

// VerifyPassword reports whether password matches hash, a "$7$" or "$6$"
// hash as in a Mosquitto password file. The comparison takes constant
// time.
func VerifyPassword(hash, password string) (bool, error) {
	h, err := parseHash(hash)
	if err != nil {
		return false, err
	}
	return h.verify(password), nil
}

// parseHash parses "$7$iterations$salt$hash" or "$6$salt$hash".
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
		h.iterations, salt, sum = n, parts[3], parts[4]
	case parts[1] == "6" && len(parts) == 4:
		salt, sum = parts[2], parts[3]
	default:
		return h, ErrUnsupportedHash
	}
	var err error
	if h.salt, err = decodeBase64(salt); err != nil || len(h.salt) == 0 {
		return h, errors.New("auth: bad salt encoding")
	}
	if h.sum, err = decodeBase64(sum); err != nil || len(h.sum) != hashSize {
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
	var sum []byte
	if h.iterations > 0 {
		var err error
		if sum, err = pbkdf2.Key(sha512.New, password, h.salt, h.iterations, hashSize); err != nil {
			return false
		}
	} else {
		d := sha512.New()
		d.Write([]byte(password))
		d.Write(h.salt)
		sum = d.Sum(nil)
	}
	return subtle.ConstantTimeCompare(sum, h.sum) == 1
}
