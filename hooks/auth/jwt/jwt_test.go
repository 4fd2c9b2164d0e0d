package jwt

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/internal/authmetrics"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

var discard = slog.New(slog.DiscardHandler)

// connect runs the hook for a CONNECT carrying token as the password,
// returning the decision, the code it refuses with and the user name it
// leaves. (The end-to-end tests read the codes in real CONNACKs.)
func connect(h *Hook, clientID, username, token string) (tern.Decision, packets.ReasonCode, string) {
	c := &tern.Client{}
	pk := &packets.Connect{ClientID: clientID, Username: username, Password: []byte(token)}
	if !looksLikeJWT(token) {
		return h.Authenticate(c, pk), packets.Success, pk.Username
	}
	if r := h.check(c, pk, token); r != nil {
		return tern.Deny, r.code, pk.Username
	}
	return tern.Allow, packets.Success, pk.Username
}

// Every algorithm of the allow-list verifies through the JWKS.
func TestAlgorithmsThroughJWKS(t *testing.T) {
	keys := testKeys()
	srv := newJWKSServer(t, keys...)
	h := newHook(t, srv, nil)
	for _, k := range keys {
		tok := k.mint(t, claims("dev1"))
		if d, code, _ := connect(h, "dev1", "", tok); d != tern.Allow {
			t.Errorf("%s: %v %v", k.alg, d, code)
		}
	}
	if got := h.Metrics().Requests(authmetrics.Allow); got != 3 {
		t.Errorf("allow count %v, want 3", got)
	}
}

// Tokens that must be refused are, with the code the package promises.
func TestRefusals(t *testing.T) {
	keys := testKeys()
	rs, es := keys[0], keys[1]
	srv := newJWKSServer(t, keys...)
	h := newHook(t, srv, nil)
	now := time.Now()
	with := func(change func(gojwt.MapClaims)) gojwt.MapClaims {
		c := claims("dev1")
		change(c)
		return c
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(rsaKey.Public())
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	tests := []struct {
		name  string
		token string
		want  packets.ReasonCode
	}{
		{"alg none", unsigned(claims("dev1")), packets.BadUserNameOrPassword},
		{"HS256 signed with the public key PEM", hs256(t, "rsa-1", pubPEM, claims("dev1")), packets.BadUserNameOrPassword},
		{"HS256 signed with the public key DER", hs256(t, "rsa-1", pubDER, claims("dev1")), packets.BadUserNameOrPassword},
		{"expired", es.mint(t, with(func(c gojwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), packets.BadUserNameOrPassword},
		{"no exp", es.mint(t, with(func(c gojwt.MapClaims) { delete(c, "exp") })), packets.BadUserNameOrPassword},
		{"not yet valid", es.mint(t, with(func(c gojwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })), packets.BadUserNameOrPassword},
		{"issued in the future", es.mint(t, with(func(c gojwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() })), packets.BadUserNameOrPassword},
		{"wrong issuer", rs.mint(t, with(func(c gojwt.MapClaims) { c["iss"] = "https://evil.test/" })), packets.BadUserNameOrPassword},
		{"wrong audience", rs.mint(t, with(func(c gojwt.MapClaims) { c["aud"] = "other" })), packets.BadUserNameOrPassword},
		{"unknown key id", signer{"ES256", "nope", es.priv}.mint(t, claims("dev1")), packets.BadUserNameOrPassword},
		{"bad signature", es.mint(t, claims("dev1"))[:20] + "x" + es.mint(t, claims("dev1"))[21:], packets.BadUserNameOrPassword},
		{"client id claim mismatch", rs.mint(t, claims("dev2")), packets.NotAuthorized},
		{"client id claim missing", rs.mint(t, with(func(c gojwt.MapClaims) { delete(c, "clientid") })), packets.NotAuthorized},
		{"bad acl claim", rs.mint(t, with(func(c gojwt.MapClaims) { c["acl"] = "everything" })), packets.NotAuthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, code, _ := connect(h, "dev1", "", tt.token)
			if d != tern.Deny || code != tt.want {
				t.Errorf("%v %v, want Deny %v", d, code, tt.want)
			}
		})
	}
}

// An HMAC secret verifies HS256 tokens and only those: a token signed
// with the public key as the secret still fails when HS256 is allowed.
func TestHMACAndConfusion(t *testing.T) {
	keys := testKeys()
	srv := newJWKSServer(t, keys...)
	secret := []byte("0123456789abcdef0123456789abcdef")
	h := newHook(t, srv, func(o *Options) {
		o.Algorithms = append(o.Algorithms, "HS256")
		o.HMACSecret = secret
	})
	if d, code, _ := connect(h, "dev1", "", hs256(t, "", secret, claims("dev1"))); d != tern.Allow {
		t.Fatalf("HS256 with the secret: %v %v", d, code)
	}
	der, _ := x509.MarshalPKIXPublicKey(rsaKey.Public())
	for _, k := range [][]byte{der, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), []byte(keys[0].jwk()["n"])} {
		if d, _, _ := connect(h, "dev1", "", hs256(t, "rsa-1", k, claims("dev1"))); d != tern.Deny {
			t.Fatal("HS256 signed with the public key accepted")
		}
	}
	// An RS256 token verified with the HMAC secret is impossible too.
	if d, _, _ := connect(h, "dev1", "", keys[0].mint(t, claims("dev1"))); d != tern.Allow {
		t.Fatal("RS256 refused")
	}
	for _, bad := range []Options{
		{Algorithms: []string{"none"}, HMACSecret: secret},
		{Algorithms: []string{"HS256"}},
		{Algorithms: []string{"RS256"}},
		{Algorithms: []string{"HS256"}, HMACSecret: []byte("short")},
		{},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) succeeded", bad)
		}
	}
}

// A password that is not shaped like a JWT abstains, for a password file.
func TestNotAToken(t *testing.T) {
	h := newHook(t, newJWKSServer(t, testKeys()...), nil)
	for _, pw := range []string{"", "secret", "a.b", "has spaces.in.it"} {
		if d, _, _ := connect(h, "dev1", "alice", pw); d != tern.Abstain {
			t.Errorf("password %q: %v", pw, d)
		}
	}
}

// The user name claim becomes the client's user name; with from:
// username the token is never kept as the name.
func TestUsernameClaimAndFrom(t *testing.T) {
	es := testKeys()[1]
	srv := newJWKSServer(t, testKeys()...)
	h := newHook(t, srv, func(o *Options) { o.UsernameClaim = "sub" })
	if d, _, user := connect(h, "dev1", "whatever", es.mint(t, claims("dev1"))); d != tern.Allow || user != "user-dev1" {
		t.Fatalf("%v, user %q", d, user)
	}
	h = newHook(t, srv, func(o *Options) {
		o.From = "username"
		o.Claims = map[string]string{"clientid": "{clientid}", "aud": "mqtt"}
	})
	c := &tern.Client{}
	tok := es.mint(t, claims("dev1"))
	pk := &packets.Connect{ClientID: "dev1", Username: tok}
	if d := h.Authenticate(c, pk); d != tern.Allow || pk.Username != "" {
		t.Fatalf("from username: %v, user %q", d, pk.Username)
	}
	// Claims may name the user name and the certificate CN.
	h = newHook(t, srv, func(o *Options) { o.Claims = map[string]string{"sub": "user-${username}"} })
	if d, code, _ := connect(h, "x", "dev1", es.mint(t, claims("dev1"))); d != tern.Allow {
		t.Fatalf("username claim: %v %v", d, code)
	}
	if d, _, _ := connect(h, "x", "dev2", es.mint(t, claims("dev1"))); d != tern.Deny {
		t.Fatal("username claim mismatch accepted")
	}
}

// A key id the set does not have makes the hook fetch the set again at
// once (rate-limited), so a rotated key works at its first token.
func TestRotationOnUnknownKeyID(t *testing.T) {
	keys := testKeys()
	srv := newJWKSServer(t, keys[0])
	h := newHook(t, srv, nil)
	before := srv.fetches.Load()
	srv.setKeys(keys[0], keys[1]) // the identity provider adds ec-1
	if d, code, _ := connect(h, "dev1", "", keys[1].mint(t, claims("dev1"))); d != tern.Allow {
		t.Fatalf("new key id: %v %v", d, code)
	}
	if got := srv.fetches.Load() - before; got != 1 {
		t.Fatalf("%d fetches for the new key id, want 1", got)
	}
	// A second unknown id within the interval does not fetch again.
	connect(h, "dev1", "", signer{"ES256", "other", keys[1].priv}.mint(t, claims("dev1")))
	if got := srv.fetches.Load() - before; got != 1 {
		t.Fatalf("%d fetches, want still 1 (rate limited)", got)
	}
}

// With extra fetches used up, a new key id is picked up by the next
// periodic refresh, and a removed key stops verifying.
func TestRotationWithinOneRefresh(t *testing.T) {
	keys := testKeys()
	srv := newJWKSServer(t, keys[0])
	const refresh = 300 * time.Millisecond
	h := newHook(t, srv, func(o *Options) { o.JWKSRefresh = refresh; o.JWKSUnknownKID = time.Hour })
	connect(h, "dev1", "", signer{"ES256", "burn", keys[1].priv}.mint(t, claims("dev1"))) // uses the one extra fetch
	before, _ := h.JWKSRefreshes()
	srv.setKeys(keys[1]) // rotate: ec-1 in, rsa-1 out
	tok := keys[1].mint(t, claims("dev1"))
	// Counted in refreshes, not in time: the one running at the rotation
	// may still bring the old set, the next one must bring the new.
	terntest.Eventually(t, "the new key picked up", func() bool {
		d, _, _ := connect(h, "dev1", "", tok)
		return d == tern.Allow
	})
	if after, _ := h.JWKSRefreshes(); after-before > 2 {
		t.Errorf("new key picked up after %d refreshes, more than one refresh after the rotation", after-before)
	}
	if d, _, _ := connect(h, "dev1", "", keys[0].mint(t, claims("dev1"))); d != tern.Deny {
		t.Error("a key removed from the set still verifies")
	}
	if ok, _ := h.JWKSRefreshes(); ok < 3 {
		t.Errorf("JWKS refreshes ok = %d, want at least 3", ok)
	}
}

// While the key set was never fetched, tokens are refused with 0x88
// Server unavailable, not as bad credentials; once it is up they verify.
func TestJWKSUnavailable(t *testing.T) {
	keys := testKeys()
	srv := newJWKSServer(t, keys...)
	srv.down.Store(true)
	h := newHook(t, srv, func(o *Options) { o.JWKSUnknownKID = time.Millisecond })
	if d, code, _ := connect(h, "dev1", "", keys[1].mint(t, claims("dev1"))); d != tern.Deny || code != packets.ServerUnavailable {
		t.Fatalf("JWKS down: %v %v, want Deny 0x88", d, code)
	}
	if _, failed := h.JWKSRefreshes(); failed == 0 {
		t.Error("failed fetches not counted")
	}
	srv.down.Store(false)
	time.Sleep(5 * time.Millisecond)
	if d, code, _ := connect(h, "dev1", "", keys[1].mint(t, claims("dev1"))); d != tern.Allow {
		t.Fatalf("JWKS back: %v %v", d, code)
	}
}

// Keys from a PEM file verify without a JWKS URL.
func TestPublicKeyFile(t *testing.T) {
	keys := testKeys()
	var file []byte
	for _, k := range keys {
		der, _ := x509.MarshalPKIXPublicKey(k.priv.Public())
		file = append(file, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	pks, err := ParsePublicKeys(file)
	if err != nil || len(pks) != 3 {
		t.Fatal(len(pks), err)
	}
	h, err := New(Options{Algorithms: []string{"RS256", "ES256", "EdDSA"}, PublicKeys: pks, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		k.kid = "" // no key id: every key of the family is tried
		if d, code, _ := connect(h, "dev1", "", k.mint(t, claims("dev1"))); d != tern.Allow {
			t.Errorf("%s: %v %v", k.alg, d, code)
		}
	}
	if _, err := ParsePublicKeys([]byte("nothing")); err == nil {
		t.Error("no keys parsed without an error")
	}
}

// unsigned returns a token with alg none.
func unsigned(c gojwt.MapClaims) string {
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	p, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

// hs256 signs claims with HS256 using key as the secret, by hand (the
// library refuses keys that are not []byte, which is the point).
func hs256(t testing.TB, kid string, key []byte, c gojwt.MapClaims) string {
	hdr := map[string]string{"alg": "HS256", "typ": "JWT"}
	if kid != "" {
		hdr["kid"] = kid
	}
	h, _ := json.Marshal(hdr)
	p, _ := json.Marshal(c)
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// A token verified once is not checked again while it is valid, but the
// client-dependent claims are; the cache forgets it at exp and when the
// key set is replaced.
func TestTokenCache(t *testing.T) {
	keys := testKeys()
	srv := newJWKSServer(t, keys...)
	h := newHook(t, srv, func(o *Options) { o.JWKSUnknownKID = time.Millisecond })
	tok := keys[1].mint(t, claims("dev1"))
	for i := 0; i < 3; i++ {
		if d, code, _ := connect(h, "dev1", "", tok); d != tern.Allow {
			t.Fatalf("connect %d: %v %v", i, d, code)
		}
	}
	if hits := h.Metrics().CacheHits(); hits != 2 {
		t.Fatalf("cache hits %v, want 2", hits)
	}
	if d, code, _ := connect(h, "dev2", "", tok); d != tern.Deny || code != packets.NotAuthorized {
		t.Fatalf("cached token for another client: %v %v", d, code)
	}
	// Expiry: cached until exp, refused after.
	short := claims("dev1")
	exp := time.Now().Add(1100 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	short["exp"] = exp.Unix()
	stok := keys[0].mint(t, short)
	connect(h, "dev1", "", stok)
	time.Sleep(time.Until(exp) + 10*time.Millisecond)
	if d, _, _ := connect(h, "dev1", "", stok); d != tern.Deny {
		t.Fatal("expired token accepted from the cache")
	}
	// A key withdrawn from the set: the next fetch empties the cache.
	srv.setKeys(keys[0], keys[2])
	connect(h, "dev1", "", signer{"ES256", "unknown", keys[1].priv}.mint(t, claims("dev1"))) // makes the hook fetch
	if d, _, _ := connect(h, "dev1", "", tok); d != tern.Deny {
		t.Fatal("token of a withdrawn key accepted from the cache")
	}
	// Off: every CONNECT checks the signature.
	off := newHook(t, srv, func(o *Options) { o.CacheSize = -1 })
	tok = keys[0].mint(t, claims("dev1"))
	connect(off, "dev1", "", tok)
	connect(off, "dev1", "", tok)
	if hits := off.Metrics().CacheHits(); hits != 0 {
		t.Fatalf("cache off: %v hits", hits)
	}
}

// certConn is a connection with a client certificate, as the TLS
// listeners' connections are.
type certConn struct{ cn string }

func (c certConn) PeerCertificates() []*x509.Certificate {
	return []*x509.Certificate{{Subject: pkix.Name{CommonName: c.cn}}}
}

// Claims may name the certificate's CN; placeholders in both spellings.
func TestClaimTemplates(t *testing.T) {
	if got := certCN(certConn{"dev-7"}); got != "dev-7" {
		t.Errorf("certCN = %q", got)
	}
	if got := certCN(nil); got != "" {
		t.Errorf("certCN(nil) = %q", got)
	}
	w := who{clientID: "c1", username: "u1", cn: "dev-7"}
	for tmpl, want := range map[string]string{"{cn}": "dev-7", "${cn}/{clientid}": "dev-7/c1", "user-{username}": "user-u1", "plain": "plain"} {
		if got := expand(tmpl, w); got != want {
			t.Errorf("expand(%q) = %q, want %q", tmpl, got, want)
		}
	}
	es := testKeys()[1]
	h := newHook(t, newJWKSServer(t, testKeys()...), func(o *Options) { o.Claims = map[string]string{"sub": "{cn}"} })
	cl := claims("dev1")
	cl["sub"] = "dev-7"
	if _, r := h.verify(es.mint(t, cl), w); r != nil {
		t.Fatalf("CN claim: %v", r)
	}
	w.cn = "other"
	if _, r := h.verify(es.mint(t, cl), w); r == nil || r.code != packets.NotAuthorized {
		t.Fatalf("CN mismatch: %v", r)
	}
}
