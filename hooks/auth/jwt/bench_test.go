package jwt

import (
	"encoding/base64"
	"strings"
	"testing"

	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
)

// BenchmarkAuthenticate measures what a CONNECT with a token costs the
// hook once the key is cached: parsing, the signature check, the claims
// and the access list (two rules), per algorithm ("verify"); and for a
// client reconnecting with a token verified before ("cached": a SHA-256
// and a lookup instead of the signature check). The target is 50 µs.
//
//	go test -run '^$' -bench Authenticate -benchmem ./hooks/auth/jwt
func BenchmarkAuthenticate(b *testing.B) {
	keys := testKeys()
	srv := newJWKSServer(b, keys...)
	for _, mode := range []string{"verify", "cached"} {
		h := newHook(b, srv, func(o *Options) {
			o.UsernameClaim = "sub"
			o.Algorithms = append(o.Algorithms, "HS256")
			o.HMACSecret = benchSecret
			if mode == "verify" {
				o.CacheSize = -1
			}
		})
		// HS256 (an HMAC: about a microsecond) shows what the hook costs
		// besides the signature check.
		for _, alg := range []string{"RS256", "ES256", "EdDSA", "HS256"} {
			b.Run(alg+"/"+mode, func(b *testing.B) {
				cl := claims("dev1")
				cl["acl"] = []any{
					map[string]any{"permission": "allow", "action": "publish", "topic": "dev/${clientid}/up"},
					map[string]any{"permission": "allow", "action": "subscribe", "topic": "dev/${clientid}/down/#"},
				}
				var tok []byte
				if alg == "HS256" {
					tok = []byte(hs256(b, "", benchSecret, cl))
				} else {
					tok = []byte(keyFor(keys, alg).mint(b, cl))
				}
				pk := &packets.Connect{ClientID: "dev1", Password: tok}
				if h.Authenticate(&tern.Client{}, pk) != tern.Allow {
					b.Fatal("token refused")
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					pk.Username = ""
					if h.Authenticate(&tern.Client{}, pk) != tern.Allow {
						b.Fatal("token refused")
					}
				}
			})
		}
	}
}

// BenchmarkSignature is the signature check alone, the floor under
// BenchmarkAuthenticate/*/verify: what is left is the hook's own work.
func BenchmarkSignature(b *testing.B) {
	for _, k := range testKeys() {
		b.Run(k.alg, func(b *testing.B) {
			tok := k.mint(b, claims("dev1"))
			i := strings.LastIndexByte(tok, '.')
			sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
			if err != nil {
				b.Fatal(err)
			}
			m := gojwt.GetSigningMethod(k.alg)
			pub := k.priv.Public()
			for b.Loop() {
				if err := m.Verify(tok[:i], sig, pub); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var benchSecret = []byte("0123456789abcdef0123456789abcdef")

func keyFor(keys []signer, alg string) signer {
	for _, k := range keys {
		if k.alg == alg {
			return k
		}
	}
	panic(alg)
}
