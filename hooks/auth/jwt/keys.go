package jwt

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	gojwt "github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// unknownWait bounds how long a CONNECT with an unknown key id waits for
// the key set to be fetched again.
const unknownWait = 2 * time.Second

var jwksRefreshDesc = prometheus.NewDesc("tern_jwks_refresh_total", "Fetches of the JWKS URL, by result.", []string{"result"}, nil)

// jwks is a key set fetched from a URL and refreshed in the background.
type jwks struct {
	kf       keyfunc.Keyfunc
	cancel   context.CancelFunc
	ok       atomic.Int64 // fetches that replaced the keys
	failed   atomic.Int64
	nonEmpty atomic.Bool // the last fetch that succeeded gave keys
	replaced func()      // called after each fetch that replaced the keys
}

// countingStore is the key set's storage, counting the fetches that
// replace it.
type countingStore struct {
	jwkset.Storage
	j *jwks
}

func (s countingStore) KeyReplaceAll(ctx context.Context, given []jwkset.JWK) error {
	err := s.Storage.KeyReplaceAll(ctx, given)
	if err == nil {
		s.j.ok.Add(1)
		s.j.nonEmpty.Store(len(given) > 0)
		if s.j.replaced != nil {
			s.j.replaced()
		}
	}
	return err
}

// newJWKS starts fetching the key set; replaced, when not nil, is called
// each time a fetch replaces it.
func newJWKS(opts Options, log *slog.Logger, replaced func()) (*jwks, error) {
	j := &jwks{replaced: replaced}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	timeout := client.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	refresh := opts.JWKSRefresh
	if refresh <= 0 {
		refresh = 10 * time.Minute
	}
	unknown := opts.JWKSUnknownKID
	if unknown <= 0 {
		unknown = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	j.cancel = cancel
	store, err := jwkset.NewStorageFromHTTP(opts.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client:                    client,
		Ctx:                       ctx,
		HTTPTimeout:               timeout,
		NoErrorReturnFirstHTTPReq: true, // start anyway; the refresh retries
		RefreshInterval:           refresh,
		Storage:                   countingStore{jwkset.NewMemoryStorage(), j},
		RefreshErrorHandler: func(_ context.Context, err error) {
			j.failed.Add(1)
			log.Warn("fetching the JWKS failed; the keys fetched before stay", "url", opts.JWKSURL, "err", err)
		},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("jwt: JWKS URL: %w", err)
	}
	hc, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{opts.JWKSURL: store},
		// A token with an unknown key id fetches the set again, at most
		// once per interval. A CONNECT waits for the limiter and that
		// fetch at most unknownWait, and fails at once when the limiter
		// would make it wait longer, so tokens with made-up key ids cost
		// next to nothing.
		RefreshUnknownKID: rate.NewLimiter(rate.Every(unknown), 1),
		RateLimitWaitMax:  min(timeout, unknownWait),
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("jwt: JWKS: %w", err)
	}
	j.kf, err = keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: hc})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("jwt: JWKS: %w", err)
	}
	return j, nil
}

// hasKeys reports whether the set holds keys.
func (j *jwks) hasKeys() bool { return j.nonEmpty.Load() }

// key returns the keys a token may be verified with: the one of its key
// id, or every key of the set when it names none.
func (j *jwks) key(t *gojwt.Token) ([]gojwt.VerificationKey, error) {
	k, err := j.kf.Keyfunc(t)
	if err != nil {
		return nil, err
	}
	if set, ok := k.(gojwt.VerificationKeySet); ok {
		return set.Keys, nil
	}
	return []gojwt.VerificationKey{k}, nil
}

// Stop implements tern.Stopper: it stops refreshing the key set.
func (h *Hook) Stop(context.Context) error {
	if h.jwks != nil {
		h.jwks.cancel()
	}
	return nil
}

// ParsePublicKeys reads the public keys of a PEM file: "PUBLIC KEY"
// (PKIX: RSA, ECDSA or Ed25519), "RSA PUBLIC KEY" (PKCS #1) and
// "CERTIFICATE" blocks (the certificate's key).
func ParsePublicKeys(data []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		var k any
		var err error
		switch b.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(b.Bytes); err == nil {
				k = c.PublicKey
			}
		default:
			return nil, fmt.Errorf("jwt: PEM block %q is not a public key or certificate", b.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("jwt: %s: %w", b.Type, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("jwt: no PEM public key found")
	}
	return keys, nil
}
