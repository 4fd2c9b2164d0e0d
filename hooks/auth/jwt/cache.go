package jwt

import (
	"sync"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
)

// The verified-token cache: a device that reconnects with the token it
// used before (tokens live for hours, reconnects come in storms) costs a
// SHA-256 and a map lookup instead of a signature check, tens of
// microseconds. An entry holds a token's claims as verified (signature,
// issuer, audience, nbf and iat) and lives until the token's exp plus
// leeway, tokenCacheTTL at most. It is emptied whenever the key set is
// fetched and replaced, so a key the identity provider withdrew stops
// verifying at the next refresh, as it does without the cache. Only the
// SHA-256 of a token is kept as the key, never the token. The checks that
// depend on the client (the claims that must equal its identifier, the
// user name claim, the acl claim) run at every CONNECT.

// tokenCacheTTL bounds how long a verified token is trusted without its
// signature being checked again.
const tokenCacheTTL = 10 * time.Minute

type tokenKey [32]byte

type cachedToken struct {
	claims gojwt.MapClaims // read-only once cached
	until  time.Time
}

type tokenCache struct {
	mu  sync.Mutex
	max int
	m   map[tokenKey]cachedToken
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, m: make(map[tokenKey]cachedToken)}
}

func (c *tokenCache) get(k tokenKey, now time.Time) (gojwt.MapClaims, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil, false
	}
	if !now.Before(e.until) {
		delete(c.m, k)
		return nil, false
	}
	return e.claims, true
}

func (c *tokenCache) put(k tokenKey, claims gojwt.MapClaims, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		now := time.Now()
		for key, e := range c.m { // expired entries first, then any half
			if !now.Before(e.until) || len(c.m) > c.max/2 {
				delete(c.m, key)
			}
		}
	}
	c.m[k] = cachedToken{claims, until}
}

// clear empties the cache (the key set changed).
func (c *tokenCache) clear() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

// Len returns the number of tokens cached.
func (c *tokenCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
