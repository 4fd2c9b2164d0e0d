package auth

import (
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
		// Computed with the reference implementation's argon2 command
		// (Debian package argon2): echo -n pässwörd | argon2 saltsaltsalt
		// -id -t 2 -m 10 -p 1 -l 32 -e, and so on.
		{
			name:     "argon2id",
			hash:     "$argon2id$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$Akm/ziMgnLRKfBS1HLiEg2kLHYGEXpBOEk/zVdAcUJA",
			password: "pässwörd",
			want:     true,
		},
		{
			name:     "argon2id wrong password",
			hash:     "$argon2id$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$Akm/ziMgnLRKfBS1HLiEg2kLHYGEXpBOEk/zVdAcUJA",
			password: "passwörd",
		},
		{
			name:     "argon2id, 2 threads, 16-byte hash",
			hash:     "$argon2id$v=19$m=256,t=3,p=2$c29tZXNhbHRzb21lc2FsdA$gN/ETQd6+Zlseg6De98XBg",
			password: "password",
			want:     true,
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

// New hashes have the cost OWASP's Password Storage Cheat Sheet asks for
// each algorithm: PBKDF2-HMAC-SHA512 210,000 iterations; argon2id 19 MiB,
// 2 passes, 1 thread.
func TestHashPassword(t *testing.T) {
	for _, tc := range []struct {
		opts   HashOptions
		prefix string
		salt   int
		sum    int
	}{
		{HashOptions{}, "$7$210000$", SaltSize, 64},
		{HashOptions{Iterations: 1000}, "$7$1000$", SaltSize, 64},
		{HashOptions{Algorithm: Argon2id}, "$argon2id$v=19$m=19456,t=2,p=1$", 16, 32},
		{HashOptions{Algorithm: Argon2id, Iterations: 3}, "$argon2id$v=19$m=19456,t=3,p=1$", 16, 32},
		{HashOptions{Algorithm: SaltedSHA512}, "$6$", SaltSize, 64},
	} {
		h, err := HashPasswordWith("s3cret", tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h, tc.prefix) {
			t.Fatalf("%+v: hash %q, want %s...", tc.opts, h, tc.prefix)
		}
		parts := strings.Split(h, "$")
		salt, _ := decodeBase64(parts[len(parts)-2])
		sum, _ := decodeBase64(parts[len(parts)-1])
		if len(salt) != tc.salt || len(sum) != tc.sum {
			t.Errorf("%+v: salt %d bytes, hash %d bytes; want %d and %d", tc.opts, len(salt), len(sum), tc.salt, tc.sum)
		}
		for pw, want := range map[string]bool{"s3cret": true, "s3cret\n": false, "": false} {
			if ok, err := VerifyPassword(h, pw); err != nil || ok != want {
				t.Errorf("%+v: VerifyPassword(%q) = %v, %v; want %v", tc.opts, pw, ok, err, want)
			}
		}
		h2, _ := HashPasswordWith("s3cret", tc.opts)
		if h2 == h {
			t.Errorf("%+v: two hashes of one password are equal: the salt is not random", tc.opts)
		}
	}
	if _, err := HashPasswordWith("x", HashOptions{Algorithm: "md5"}); err == nil {
		t.Error("unknown algorithm accepted")
	}
}

func TestParseHashErrors(t *testing.T) {
	tests := []struct {
		name string
		hash string
	}{
		{name: "plain text", hash: "secret"},
		{name: "argon2id short hash", hash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"},
		{name: "argon2id version 16", hash: "$argon2id$v=16$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$Akm/ziMgnLRKfBS1HLiEg2kLHYGEXpBOEk/zVdAcUJA"},
		{name: "argon2id memory of 4 GiB", hash: "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$Akm/ziMgnLRKfBS1HLiEg2kLHYGEXpBOEk/zVdAcUJA"},
		{name: "argon2i", hash: "$argon2i$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$Akm/ziMgnLRKfBS1HLiEg2kLHYGEXpBOEk/zVdAcUJA"},
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
