// Package jwt authenticates MQTT clients by JSON Web Tokens and authorizes
// them by an access list the token carries, as EMQX's JWT authentication
// does, so that tokens issued for EMQX (or by any OpenID Connect identity
// provider: Auth0, Keycloak, ...) work unchanged.
//
// The token comes in the CONNECT's password (or user name) field, or, for
// an MQTT 5 client that wants to renew it without reconnecting, as the
// Authentication Data of the Authentication Method "JWT". It is verified
// with the keys of a JWKS URL (refreshed periodically and, at most once
// per interval, when a token names a key id not yet known, so key
// rotation needs no restart), of a PEM file, or with an HMAC secret, for
// an explicit list of algorithms only: "none" is never accepted, and an
// HMAC algorithm only ever uses the HMAC secret, so a token signed with
// HS256 using a public key as the secret (the algorithm-confusion attack)
// fails. Then the issuer, the audience, "exp" (required unless told
// otherwise), "nbf" and "iat" are checked, with a leeway for clock skew,
// and claims that must equal the client's identifier, user name or
// certificate CN.
//
// Decisions, as an Authenticator: a password (or user name) that is not
// shaped like a JWT (three dot-separated base64url parts) abstains, so a
// password file may decide; a token that does not verify is refused with
// 0x86 Bad user name or password (3.1.1: 4), one whose claims do not
// match with 0x87 Not authorized (3.1.1: 5), and while no key was ever
// fetched from the JWKS URL with 0x88 Server unavailable (3.1.1: 3).
//
// After CONNECT the token's access list (EMQX's "acl" claim, see package
// emqxacl) is checked before the other authorizers, so add this hook
// before an ACL file; with no list, or no rule applying, it abstains.
//
// When the token expires the client is disconnected (MQTT 5: DISCONNECT
// 0xA0 Maximum connect time; its will is published), unless it is an MQTT
// 5 client that connected with the method "JWT" and sent a fresh token in
// an AUTH packet (re-authentication, section 4.12.1) before then. A timer
// per client (time.AfterFunc: no goroutine) does it, stopped when the
// client disconnects.
//
// Add a ban list (or any connect gate) before this hook so banned clients
// are refused before their token is checked.
package jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/ternmq/tern/hooks/auth/emqxacl"
	"github.com/ternmq/tern/hooks/internal/authmetrics"
	"github.com/ternmq/tern/packets"
)

// Options configures the hook. Algorithms and at least one source of keys
// are required.
type Options struct {
	// From is the CONNECT field that carries the token: "password" (the
	// default) or "username".
	From string
	// AuthMethod is the MQTT 5 Authentication Method whose data is the
	// token, for clients that re-authenticate; default "JWT".
	AuthMethod string

	// Algorithms are the signing algorithms accepted: RS256, RS384,
	// RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, and HS256,
	// HS384, HS512 (with HMACSecret only). "none" is refused.
	Algorithms []string

	// JWKSURL is a JSON Web Key Set to fetch keys from (an identity
	// provider's jwks_uri).
	JWKSURL string
	// JWKSRefresh is how often the key set is fetched again; default 10m.
	JWKSRefresh time.Duration
	// JWKSUnknownKID is the least time between two extra fetches made for
	// tokens with a key id not in the set; default 10s.
	JWKSUnknownKID time.Duration
	// HTTPClient fetches the key set (for a private CA, say); nil: a
	// client with a 10 s timeout.
	HTTPClient *http.Client

	// PublicKeys are verification keys given directly (see
	// ParsePublicKeys for a PEM file).
	PublicKeys []crypto.PublicKey
	// HMACSecret is the secret of the HS algorithms.
	HMACSecret []byte

	// Issuer and Audience, when set, must be the token's "iss" and one of
	// its "aud".
	Issuer   string
	Audience string
	// Leeway is the clock skew allowed when checking exp, nbf and iat; a
	// client is disconnected at exp plus Leeway.
	Leeway time.Duration
	// AllowNoExpiry accepts tokens without "exp" (and never disconnects
	// their clients). By default "exp" is required.
	AllowNoExpiry bool

	// Claims are claims that must equal a value: "{clientid}",
	// "{username}" and "{cn}" (or ${clientid}, ...) in the value stand for
	// the client's identifier, the CONNECT's user name and the CN of its
	// client certificate. A claim that is missing does not equal.
	Claims map[string]string
	// UsernameClaim, when set, names a claim that becomes the client's
	// user name (for the ACL file, logs and the admin API); a token without
	// it is refused.
	UsernameClaim string
	// ACLClaim names the claim holding the client's access list in EMQX's
	// format (package emqxacl); "" reads none.
	ACLClaim string
	// KeepOnExpiry leaves clients connected when their token expires.
	KeepOnExpiry bool
	// CacheSize is how many verified tokens are remembered, so that a
	// client reconnecting with the same token is not checked again (see
	// cache.go); default 10000, negative for none.
	CacheSize int

	// Logger receives the hook's logs; nil uses slog.Default().
	Logger *slog.Logger
}

// Hook is the JWT hook: a tern.Authenticator, tern.ConnectGate and
// tern.EnhancedAuthenticator (for the method "JWT"), a
// tern.RequestAuthorizer (the access list claim), a tern.ConnectObserver
// and tern.DisconnectObserver (the expiry timer), a tern.Stopper (the
// key set refresher) and a prometheus.Collector.
type Hook struct {
	opts    Options
	log     *slog.Logger
	parser  *gojwt.Parser
	hmac    []byte
	static  []crypto.PublicKey
	jwks    *jwks       // nil without a JWKS URL
	cache   *tokenCache // nil when off
	from    string
	method  string
	metrics *authmetrics.Metrics

	expired atomic.Int64 // clients disconnected at their token's expiry
	reauths *prometheus.CounterVec
	expDesc *prometheus.Desc
}

// Errors of New.
var (
	ErrNoAlgorithms = errors.New("jwt: no algorithms listed")
	ErrNoKeys       = errors.New("jwt: no keys: set a JWKS URL, public keys or an HMAC secret")
)

var algorithms = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true, "PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true, "EdDSA": true, "HS256": true, "HS384": true, "HS512": true,
}

func isHMAC(alg string) bool { return strings.HasPrefix(alg, "HS") }

// New returns the hook. With a JWKS URL it fetches the key set once before
// returning (a failure is logged, not returned: the fetch is retried) and
// starts refreshing it until Stop.
func New(opts Options) (*Hook, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	h := &Hook{opts: opts, log: opts.Logger, hmac: opts.HMACSecret, static: opts.PublicKeys,
		from: opts.From, method: opts.AuthMethod, metrics: authmetrics.New("jwt")}
	switch h.from {
	case "":
		h.from = "password"
	case "password", "username":
	default:
		return nil, fmt.Errorf("jwt: from %q is not password or username", opts.From)
	}
	if h.method == "" {
		h.method = "JWT"
	}
	if len(opts.Algorithms) == 0 {
		return nil, ErrNoAlgorithms
	}
	asym := false
	for _, a := range opts.Algorithms {
		switch {
		case strings.EqualFold(a, "none"):
			return nil, errors.New(`jwt: algorithm "none" is never accepted`)
		case !algorithms[a]:
			return nil, fmt.Errorf("jwt: unknown algorithm %q (want RS256, ES256, EdDSA, ... as JWA names them)", a)
		case isHMAC(a):
			if len(opts.HMACSecret) == 0 {
				return nil, fmt.Errorf("jwt: algorithm %s needs an HMAC secret", a)
			}
		default:
			asym = true
		}
	}
	if asym && opts.JWKSURL == "" && len(opts.PublicKeys) == 0 {
		return nil, ErrNoKeys
	}
	if len(opts.HMACSecret) > 0 && len(opts.HMACSecret) < 32 {
		return nil, errors.New("jwt: the HMAC secret is shorter than 32 bytes")
	}
	for _, k := range opts.PublicKeys {
		switch k.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			return nil, fmt.Errorf("jwt: public key of type %T is not RSA, ECDSA or Ed25519", k)
		}
	}
	popts := []gojwt.ParserOption{gojwt.WithValidMethods(opts.Algorithms), gojwt.WithLeeway(opts.Leeway), gojwt.WithIssuedAt()}
	if !opts.AllowNoExpiry {
		popts = append(popts, gojwt.WithExpirationRequired())
	}
	if opts.Issuer != "" {
		popts = append(popts, gojwt.WithIssuer(opts.Issuer))
	}
	if opts.Audience != "" {
		popts = append(popts, gojwt.WithAudience(opts.Audience))
	}
	h.parser = gojwt.NewParser(popts...)
	h.reauths = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tern_jwt_reauth_total",
		Help: "MQTT 5 re-authentications with a fresh token, by result."}, []string{"result"})
	h.expDesc = prometheus.NewDesc("tern_jwt_expired_disconnects_total", "Clients disconnected because their token expired.", nil, nil)
	switch {
	case opts.CacheSize == 0:
		h.cache = newTokenCache(10_000)
	case opts.CacheSize > 0:
		h.cache = newTokenCache(opts.CacheSize)
	}
	if opts.JWKSURL != "" {
		var replaced func()
		if h.cache != nil {
			replaced = h.cache.clear
		}
		j, err := newJWKS(opts, h.log, replaced)
		if err != nil {
			return nil, err
		}
		h.jwks = j
	}
	return h, nil
}

// ID implements tern.Hook.
func (h *Hook) ID() string { return "jwt" }

// Metrics returns the counters of checks by result, for tests and
// embedders; the same counters are exported through Collect.
func (h *Hook) Metrics() *authmetrics.Metrics { return h.metrics }

// ExpiredDisconnects returns how many clients were disconnected because
// their token expired.
func (h *Hook) ExpiredDisconnects() int64 { return h.expired.Load() }

// JWKSRefreshes returns the key set fetches so far that succeeded and that
// failed.
func (h *Hook) JWKSRefreshes() (ok, failed int64) {
	if h.jwks == nil {
		return 0, 0
	}
	return h.jwks.ok.Load(), h.jwks.failed.Load()
}

// Describe implements prometheus.Collector.
func (h *Hook) Describe(ch chan<- *prometheus.Desc) {
	h.metrics.Describe(ch)
	h.reauths.Describe(ch)
	ch <- h.expDesc
	if h.jwks != nil {
		ch <- jwksRefreshDesc
	}
}

// Collect implements prometheus.Collector.
func (h *Hook) Collect(ch chan<- prometheus.Metric) {
	h.metrics.Collect(ch)
	h.reauths.Collect(ch)
	ch <- prometheus.MustNewConstMetric(h.expDesc, prometheus.CounterValue, float64(h.expired.Load()))
	if h.jwks != nil {
		ch <- prometheus.MustNewConstMetric(jwksRefreshDesc, prometheus.CounterValue, float64(h.jwks.ok.Load()), "ok")
		ch <- prometheus.MustNewConstMetric(jwksRefreshDesc, prometheus.CounterValue, float64(h.jwks.failed.Load()), "error")
	}
}

// looksLikeJWT reports whether s has the shape of a compact JWS: three
// base64url parts separated by dots.
func looksLikeJWT(s string) bool {
	if len(s) < 10 || strings.Count(s, ".") != 2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// who identifies the client a token is checked for.
type who struct {
	clientID, username, cn string
}

// verified is what a token that verified says about its client.
type verified struct {
	username string // from UsernameClaim; "" when not configured
	acl      *emqxacl.Rules
	deadline time.Time // exp plus leeway; zero when none
}

// refusal is a verification failure with the CONNACK code it earns.
type refusal struct {
	code packets.ReasonCode
	err  error
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refuse(code packets.ReasonCode, format string, args ...any) *refusal {
	return &refusal{code, fmt.Errorf(format, args...)}
}

// verify checks a token for a client.
func (h *Hook) verify(token string, w who) (*verified, *refusal) {
	claims, r := h.parse(token)
	if r != nil {
		return nil, r
	}
	for name, tmpl := range h.opts.Claims {
		want := expand(tmpl, w)
		got, ok := claimString(claims[name])
		if !ok || got != want {
			return nil, refuse(packets.NotAuthorized, "claim %q is %v, want %q", name, claims[name], want)
		}
	}
	v := &verified{}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		v.deadline = exp.Add(h.opts.Leeway)
	}
	username := w.username
	if c := h.opts.UsernameClaim; c != "" {
		s, ok := claimString(claims[c])
		if !ok || s == "" {
			return nil, refuse(packets.NotAuthorized, "no user name claim %q", c)
		}
		v.username, username = s, s
	}
	if c := h.opts.ACLClaim; c != "" {
		rules, err := emqxacl.ParseValue(claims[c], w.clientID, username)
		if err != nil {
			return nil, refuse(packets.NotAuthorized, "claim %q: %v", c, err)
		}
		v.acl = rules
	}
	return v, nil
}

// parse verifies a token's signature and standard claims, or finds it
// verified in the cache.
func (h *Hook) parse(token string) (gojwt.MapClaims, *refusal) {
	var k tokenKey
	if h.cache != nil {
		k = sha256.Sum256([]byte(token))
		if claims, ok := h.cache.get(k, time.Now()); ok {
			h.metrics.CacheHit()
			return claims, nil
		}
	}
	claims := gojwt.MapClaims{}
	if _, err := h.parser.ParseWithClaims(token, claims, h.key); err != nil {
		if h.jwks != nil && errors.Is(err, gojwt.ErrTokenUnverifiable) && !h.jwks.hasKeys() {
			return nil, &refusal{packets.ServerUnavailable, fmt.Errorf("no keys fetched from the JWKS URL yet: %w", err)}
		}
		return nil, &refusal{packets.BadUserNameOrPassword, err}
	}
	if h.cache != nil {
		until := time.Now().Add(tokenCacheTTL)
		if exp, err := claims.GetExpirationTime(); err == nil && exp != nil && exp.Add(h.opts.Leeway).Before(until) {
			until = exp.Add(h.opts.Leeway)
		}
		h.cache.put(k, claims, until)
	}
	return claims, nil
}

// key returns the verification key of a token. HMAC algorithms only ever
// get the HMAC secret and the others only public keys of their own family,
// so no key can serve as another kind.
func (h *Hook) key(t *gojwt.Token) (any, error) {
	alg := t.Method.Alg()
	if isHMAC(alg) {
		if len(h.hmac) == 0 {
			return nil, errors.New("jwt: no HMAC secret")
		}
		return h.hmac, nil
	}
	var set gojwt.VerificationKeySet
	if h.jwks != nil {
		k, err := h.jwks.key(t)
		if err != nil && len(h.static) == 0 {
			return nil, err
		}
		set.Keys = append(set.Keys, k...)
	}
	for _, k := range h.static {
		set.Keys = append(set.Keys, k)
	}
	keys := set.Keys[:0]
	for _, k := range set.Keys {
		if keyFits(alg, k) {
			keys = append(keys, k)
		}
	}
	switch len(keys) {
	case 0:
		return nil, fmt.Errorf("jwt: no %s key for the token", alg)
	case 1:
		return keys[0], nil
	}
	set.Keys = keys
	return set, nil
}

// keyFits reports whether a public key is of the family of the algorithm.
func keyFits(alg string, k any) bool {
	switch k.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		return strings.HasPrefix(alg, "ES")
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// expand replaces the placeholders of a claim's expected value.
func expand(tmpl string, w who) string {
	if strings.IndexByte(tmpl, '{') < 0 {
		return tmpl
	}
	for _, p := range [...]struct{ name, value string }{
		{"${clientid}", w.clientID}, {"${username}", w.username}, {"${cn}", w.cn},
		{"{clientid}", w.clientID}, {"{username}", w.username}, {"{cn}", w.cn},
	} {
		if strings.Contains(tmpl, p.name) {
			tmpl = strings.ReplaceAll(tmpl, p.name, p.value)
		}
	}
	return tmpl
}

// claimString returns a claim as a string: strings as they are, numbers
// and booleans formatted.
func claimString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}

// certCN returns the Common Name of the client certificate of a
// connection that has one.
func certCN(conn any) string {
	if pc, ok := conn.(interface{ PeerCertificates() []*x509.Certificate }); ok {
		if certs := pc.PeerCertificates(); len(certs) > 0 {
			return certs[0].Subject.CommonName
		}
	}
	return ""
}
