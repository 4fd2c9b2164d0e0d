package auth

import (
	"encoding/base64"
	"strings"
	"testing"
)

// Vectors computed with Python's hashlib.pbkdf2_hmac and hashlib.sha512,
// an implementation independent of this package.
func TestVerifyPasswordKnownAnswers(t *testing.T) {
	tests := []struct {
		name     string
		hash     string
		password string
		want     bool
	}{
		{
			name:     "pbkdf2 101 iterations",
			hash:     "$7$101$c2FsdHNhbHRzYWx0$FCG7EBo8zJik0YXy2GHzSQZMIgRMOw788yO4Bu88kcpfFKpL26d4kQZwYWnUrhm5QP8Ay4tRcegPZigCc1KVBg==",
			password: "password",
			want:     true,
		},
		{
			name:     "pbkdf2 wrong password",
			hash:     "$7$101$c2FsdHNhbHRzYWx0$FCG7EBo8zJik0YXy2GHzSQZMIgRMOw788yO4Bu88kcpfFKpL26d4kQZwYWnUrhm5QP8Ay4tRcegPZigCc1KVBg==",
			password: "Password",
		},
		{
			name:     "pbkdf2 empty password, 1 iteration",
			hash:     "$7$1$MDEyMzQ1Njc4OWFi$WgqlNOJISZhObqShOOmaF+sbSSbEyqEuFAJq7xNNWMtFc+37QPCrBOy5nSq/uEjnXdtOU95PWGpxFNIDT1g8Ag==",
			password: "",
			want:     true,
		},
		{
			name:     "pbkdf2 UTF-8 password, 1000 iterations",
			hash:     "$7$1000$AAECAwQFBgcICQoL$iRR8uENz7KFceMWL2E8N1y1A2bF3Hh4ISU4B3LW+ZuSMCQpyYie8w9kx5VDWSXKmNRD7G/HWoqriCsdDYb6b9w==",
			password: "pässwörd",
			want:     true,
		},
		{
			name:     "pbkdf2 iteration count is part of the hash",
			hash:     "$7$100$c2FsdHNhbHRzYWx0$FCG7EBo8zJik0YXy2GHzSQZMIgRMOw788yO4Bu88kcpfFKpL26d4kQZwYWnUrhm5QP8Ay4tRcegPZigCc1KVBg==",
			password: "password",
		},
		{
			name:     "salted sha512",
			hash:     "$6$YWJjZGVmZ2hpamts$6i93SkOMf6fc41fymirTPrapd0oWBaT1tTlLItfP4seDAu6aexpm5rgu5nXJd6844jBYqiqRNRizDJXvI7dzHA==",
			password: "secret",
			want:     true,
		},
		{
			name:     "salted sha512 wrong password",
			hash:     "$6$YWJjZGVmZ2hpamts$6i93SkOMf6fc41fymirTPrapd0oWBaT1tTlLItfP4seDAu6aexpm5rgu5nXJd6844jBYqiqRNRizDJXvI7dzHA==",
			password: "secret ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := VerifyPassword(tt.hash, tt.password)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("VerifyPassword = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(h, "$")
	if len(parts) != 5 || parts[1] != "7" || parts[2] != "101" {
		t.Fatalf("hash %q is not $7$101$salt$hash", h)
	}
	salt, _ := base64.StdEncoding.DecodeString(parts[3])
	sum, _ := base64.StdEncoding.DecodeString(parts[4])
	if len(salt) != SaltSize || len(sum) != 64 {
		t.Errorf("salt %d bytes, hash %d bytes; want %d and 64", len(salt), len(sum), SaltSize)
	}
	for pw, want := range map[string]bool{"s3cret": true, "s3cret\n": false, "": false} {
		if ok, err := VerifyPassword(h, pw); err != nil || ok != want {
			t.Errorf("VerifyPassword(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	h2, _ := HashPassword("s3cret")
	if h2 == h {
		t.Error("two hashes of one password are equal: the salt is not random")
	}
}

func TestParseHashErrors(t *testing.T) {
	tests := []struct {
		name string
		hash string
	}{
		{name: "plain text", hash: "secret"},
		{name: "argon2id", hash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"},
		{name: "bad iterations", hash: "$7$x$c2FsdA==$" + strings.Repeat("A", 88)},
		{name: "zero iterations", hash: "$7$0$c2FsdA==$" + strings.Repeat("A", 86) + "=="},
		{name: "short hash", hash: "$7$101$c2FsdA==$c2hvcnQ="},
		{name: "bad base64", hash: "$6$!!!$" + strings.Repeat("A", 86) + "=="},
		{name: "missing field", hash: "$7$101$c2FsdA=="},
		{name: "unknown id", hash: "$5$c2FsdA==$" + strings.Repeat("A", 86) + "=="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := VerifyPassword(tt.hash, "x"); err == nil {
				t.Errorf("VerifyPassword(%q) gave no error", tt.hash)
			}
		})
	}
}
