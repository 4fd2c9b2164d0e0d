package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const extFile = `
listeners:
  tcp: [0.0.0.0:1883]
auth:
  jwt:
    jwks_url: https://idp.example/.well-known/jwks.json
    algorithms: [RS256, ES256]
    issuer: https://idp.example/
    claims:
      client_id: "{clientid}"
      tenant: acme
    username_claim: preferred_username
    leeway: 30s
  http:
    authn_url: http://auth.local/mqtt/auth
    headers: {Authorization: "Bearer s3cret"}
    max_concurrent: 64
    on_error: ignore
`

func TestExtAuthFile(t *testing.T) {
	c, err := Load(writeFile(t, "tern.yaml", extFile), nil, nil)
	if err != nil {
		t.Fatal(err) // a network listener with JWT alone is not open to anyone
	}
	j := c.Auth.JWT
	if !j.Enabled() || !reflect.DeepEqual(j.Claims, StringMap{"client_id": "{clientid}", "tenant": "acme"}) ||
		j.Leeway != Duration(30*time.Second) || j.From != "password" || j.ACLClaim != "acl" || !reflect.DeepEqual(j.Algorithms, []string{"RS256", "ES256"}) {
		t.Errorf("jwt %+v", j)
	}
	h := c.Auth.HTTP
	if !h.Enabled() || h.Headers["Authorization"] != "Bearer s3cret" || h.MaxConcurrent != 64 || h.OnError != "ignore" || h.Method != "POST" {
		t.Errorf("http %+v", h)
	}
	if w := c.Where("auth.jwt.claims"); !strings.HasSuffix(w, "tern.yaml:10") {
		t.Errorf("Where(auth.jwt.claims) = %q", w)
	}
	// Header values are secrets: printed redacted, and refused back.
	out, _ := c.YAML()
	if strings.Contains(string(out), "s3cret") {
		t.Fatalf("header value printed:\n%s", out)
	}
	if _, err := Load(writeFile(t, "p.yaml", string(out)), nil, nil); err == nil || !strings.Contains(err.Error(), "auth.http.headers.Authorization") {
		t.Errorf("printed configuration loads: %v", err)
	}
	back, err := Load(writeFile(t, "p.yaml", strings.Replace(string(out), redacted, "Bearer s3cret", 1)), nil, nil)
	if err != nil || !equal(back, c) {
		t.Errorf("round trip: %v", err)
	}
}

func TestExtAuthEnvironmentAndFlags(t *testing.T) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse([]string{"--http-auth-headers", "Authorization=Bearer x", "--http-auth-headers", "X-Tenant=acme",
		"--webhook", "http://a.example/h", "--webhook", "http://b.example/h", "--flapping-max-connects", "20"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load("", []string{"TERN_AUTH_JWT_JWKS_URL=https://idp/jwks", "TERN_AUTH_JWT_ALGORITHMS=EdDSA",
		"TERN_AUTH_JWT_CLAIMS=client_id={clientid}, aud=mqtt", "TERN_AUTH_HTTP_AUTHN_URL=https://auth/x"}, fs)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Auth.JWT.Claims, StringMap{"client_id": "{clientid}", "aud": "mqtt"}) {
		t.Errorf("claims %v", c.Auth.JWT.Claims)
	}
	if !reflect.DeepEqual(c.Auth.HTTP.Headers, StringMap{"Authorization": "Bearer x", "X-Tenant": "acme"}) {
		t.Errorf("headers %v", c.Auth.HTTP.Headers)
	}
	if len(c.Events.Webhooks) != 2 || c.Events.Webhooks[1].URL != "http://b.example/h" || c.Bans.Flapping.MaxConnects != 20 {
		t.Errorf("webhooks %+v, flapping %+v", c.Events.Webhooks, c.Bans.Flapping)
	}
	if _, err := Load("", []string{"TERN_AUTH_JWT_CLAIMS=novalue"}, nil); err == nil || !strings.Contains(err.Error(), "name=value") {
		t.Errorf("bad map: %v", err)
	}
}

func TestExtAuthBadFiles(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"auth:\n  jwt:\n    jwks_url: https://x/jwks\n", "auth.jwt.algorithms"},
		{"auth:\n  jwt:\n    jwks_url: https://x/jwks\n    algorithms: [none]\n", `"none" is never accepted`},
		{"auth:\n  jwt:\n    jwks_url: https://x/jwks\n    algorithms: [HS256]\n", "auth.jwt.hmac_secret_file"},
		{"auth:\n  jwt:\n    hmac_secret_file: /s\n    algorithms: [RS256]\n", "auth.jwt.jwks_url"},
		{"auth:\n  jwt:\n    jwks_url: ftp://x\n    algorithms: [RS256]\n", "not an http"},
		{"auth:\n  jwt:\n    jwks_url: https://x\n    algorithms: [RS256]\n    from: header\n", "auth.jwt.from"},
		{"auth:\n  jwt:\n    claims: [a, b]\n", "want a mapping"},
		{"auth:\n  http:\n    authn_url: https://x\n    response: xml\n", "auth.http.response"},
		{"auth:\n  http:\n    authn_url: https://x\n    max_concurrent: 0\n", "auth.http.max_concurrent"},
		{"auth:\n  http:\n    authz_url: x\n", "auth.http.authz_url"},
		{"bans:\n  flapping:\n    window: 0\n", "bans.flapping.window"},
		{"events:\n  webhooks:\n    - url: https://x\n      events: [client.exploded]\n", "events.webhooks[0].events[0]"},
		{"events:\n  webhooks:\n    - url: https://x\n      topics: [a/#/b]\n", "events.webhooks[0].topics[0]"},
		{"events:\n  webhooks:\n    - url: https://x\n      colour: red\n", `unknown key "events.webhooks[0].colour"`},
	} {
		_, err := Load(writeFile(t, "tern.yaml", tc.file), nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error with %q", tc.file, err, tc.want)
		}
	}
}

func TestBansFile(t *testing.T) {
	c := Default()
	if got := c.BansFile(); got != "tern-data/bans/bans.json" {
		t.Errorf("default BansFile = %q", got)
	}
	c.Persistence.Durability = "off"
	if got := c.BansFile(); got != "" {
		t.Errorf("durability off: %q", got)
	}
	c.Bans.File = "/etc/tern/bans.json"
	if got := c.BansFile(); got != "/etc/tern/bans.json" {
		t.Errorf("bans.file: %q", got)
	}
}
