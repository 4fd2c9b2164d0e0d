package jwt

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
)

// signer is a private key with its algorithm and key id.
type signer struct {
	alg  string
	kid  string
	priv crypto.Signer
}

var (
	keyOnce sync.Once
	rsaKey  *rsa.PrivateKey
	ecKey   *ecdsa.PrivateKey
	edKey   ed25519.PrivateKey
)

// testKeys returns an RS256, an ES256 and an EdDSA signer (generated once
// per test binary: RSA keys take a while).
func testKeys() []signer {
	keyOnce.Do(func() {
		rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048)
		ecKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, edKey, _ = ed25519.GenerateKey(rand.Reader)
	})
	return []signer{{"RS256", "rsa-1", rsaKey}, {"ES256", "ec-1", ecKey}, {"EdDSA", "ed-1", edKey}}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwk returns the public JWK of a signer.
func (s signer) jwk() map[string]string {
	m := map[string]string{"kid": s.kid, "alg": s.alg, "use": "sig"}
	switch k := s.priv.Public().(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", b64(k.N.Bytes()), b64(big.NewInt(int64(k.E)).Bytes())
	case *ecdsa.PublicKey:
		ecdh, _ := k.ECDH()
		raw := ecdh.Bytes() // 0x04 || X || Y
		m["kty"], m["crv"], m["x"], m["y"] = "EC", "P-256", b64(raw[1:33]), b64(raw[33:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", b64(k)
	}
	return m
}

// mint signs claims with s.
func (s signer) mint(t testing.TB, claims gojwt.MapClaims) string {
	t.Helper()
	m := gojwt.GetSigningMethod(s.alg)
	tok := gojwt.NewWithClaims(m, claims)
	if s.kid != "" {
		tok.Header["kid"] = s.kid
	}
	out, err := tok.SignedString(s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jwksServer serves a key set that tests change, counting fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []signer
	fetches atomic.Int64
	down    atomic.Bool
}

func newJWKSServer(t testing.TB, keys ...signer) *jwksServer {
	s := &jwksServer{keys: keys}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if s.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		s.mu.Lock()
		var set struct {
			Keys []map[string]string `json:"keys"`
		}
		for _, k := range s.keys {
			set.Keys = append(set.Keys, k.jwk())
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) setKeys(keys ...signer) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

// claims returns valid claims for a client, expiring in an hour.
func claims(clientID string) gojwt.MapClaims {
	now := time.Now()
	return gojwt.MapClaims{"sub": "user-" + clientID, "iss": "https://idp.test/", "aud": "mqtt",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "clientid": clientID}
}

// newHook returns a hook on the JWKS server with the usual test options,
// stopped when the test ends.
func newHook(t testing.TB, srv *jwksServer, change func(*Options)) *Hook {
	t.Helper()
	opts := Options{
		Algorithms: []string{"RS256", "ES256", "EdDSA"},
		JWKSURL:    srv.URL,
		Issuer:     "https://idp.test/",
		Audience:   "mqtt",
		Claims:     map[string]string{"clientid": "{clientid}"},
		ACLClaim:   "acl",
		Logger:     discard,
	}
	if change != nil {
		change(&opts)
	}
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop(context.Background()) })
	return h
}
