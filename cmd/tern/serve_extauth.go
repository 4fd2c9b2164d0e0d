package main

// tern serve's external authentication, ban list and events: the hooks of
// auth.jwt, auth.http, bans and events, added before the password and
// ACL files so that the chain is: ban list (a connect gate), JWT, HTTP,
// password file; and for authorization: the JWT acl claim, the HTTP
// answers, the ACL file.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/hooks/auth/httpauth"
	"github.com/ternmq/tern/hooks/auth/jwt"
	"github.com/ternmq/tern/hooks/ban"
	"github.com/ternmq/tern/hooks/events"
	"github.com/ternmq/tern/internal/config"
)

// extAuth is what setupExtAuth added to the server.
type extAuth struct {
	log      *slog.Logger
	bans     *ban.List
	jwt      *jwt.Hook
	http     *httpauth.Hook
	presence *events.Presence
	webhooks []*events.Webhook
}

// setupExtAuth adds the ban list, the JWT and HTTP auth hooks and the
// event hooks cfg describes to srv, in that order.
func setupExtAuth(srv *tern.Server, cfg *config.Config, log *slog.Logger) (x *extAuth, err error) {
	x = &extAuth{log: log}
	defer func() {
		if err != nil {
			x.close()
		}
	}()
	x.bans, err = ban.New(ban.Options{File: cfg.BansFile(), Flapping: flappingOptions(cfg), Logger: log.With("component", "bans")})
	if err != nil {
		return x, fmt.Errorf("bans.file: %w", err)
	}
	if err := srv.AddHook(x.bans); err != nil {
		return x, err
	}
	log.Info("ban list loaded", "file", cfg.BansFile(), "bans", x.bans.Len(), "flapping_max_connects", cfg.Bans.Flapping.MaxConnects)

	if j := &cfg.Auth.JWT; j.Enabled() {
		opts, err := jwtOptions(j, log.With("component", "jwt"))
		if err != nil {
			return x, err
		}
		if x.jwt, err = jwt.New(opts); err != nil {
			return x, fmt.Errorf("auth.jwt: %w", err)
		}
		if err := srv.AddHook(x.jwt); err != nil {
			return x, err
		}
		log.Info("JWT authentication", "jwks_url", j.JWKSURL, "public_key_file", j.PublicKeyFile, "algorithms", j.Algorithms)
	}
	if h := &cfg.Auth.HTTP; h.Enabled() {
		opts, err := httpAuthOptions(h, log.With("component", "http-auth"))
		if err != nil {
			return x, err
		}
		if x.http, err = httpauth.New(opts); err != nil {
			return x, fmt.Errorf("auth.http: %w", err)
		}
		if err := srv.AddHook(x.http); err != nil {
			return x, err
		}
		log.Info("HTTP authentication", "authn_url", h.AuthnURL, "authz_url", h.AuthzURL, "response", h.Response)
	}
	node := cfg.Events.Node
	if node == "" {
		node = srv.NodeID() // node_id, or the host name
	}
	if cfg.Events.Presence {
		x.presence = events.NewPresence(node)
		if err := srv.AddHook(x.presence); err != nil {
			return x, err
		}
	}
	for i, wc := range cfg.Events.Webhooks {
		opts, err := webhookOptions(&wc, node, log)
		if err != nil {
			return x, fmt.Errorf("events.webhooks[%d]: %w", i, err)
		}
		w, err := events.NewWebhook(opts)
		if err != nil {
			return x, fmt.Errorf("events.webhooks[%d]: %w", i, err)
		}
		for _, h := range w.Hooks() {
			if err := srv.AddHook(h); err != nil {
				return x, err
			}
		}
		x.webhooks = append(x.webhooks, w)
		log.Info("webhook", "url", wc.URL, "events", wc.Events, "topics", wc.Topics)
	}
	return x, nil
}

// close releases what setupExtAuth holds when the broker does not start
// (Shutdown stops the hooks of a broker that did).
func (x *extAuth) close() {
	if x == nil {
		return
	}
	if x.bans != nil {
		x.bans.Close()
	}
	if x.jwt != nil {
		x.jwt.Stop(context.Background())
	}
}

// collectors returns the hooks' metrics, for /metrics.
func (x *extAuth) collectors() []prometheus.Collector {
	cs := []prometheus.Collector{x.bans}
	if x.jwt != nil {
		cs = append(cs, x.jwt)
	}
	if x.http != nil {
		cs = append(cs, x.http)
	}
	for _, w := range x.webhooks {
		cs = append(cs, w)
	}
	return cs
}

// reloaders are what SIGHUP re-reads: the ban list's file.
func (x *extAuth) reloaders() []reloader {
	return []reloader{{"ban list", x.bans.Reload}}
}

// liveKeys are the keys a reload applies without a restart.
func liveKeys(k string) bool {
	return strings.HasPrefix(k, "auth.http.") || strings.HasPrefix(k, "bans.flapping.")
}

// reload applies the settings of cfg that take effect without a restart:
// the HTTP auth service's and flapping detection's. It returns the keys it
// could not apply.
func (x *extAuth) reload(old, cfg *config.Config) []string {
	var failed []string
	changed := config.Changed(old, cfg)
	if slices.ContainsFunc(changed, func(k string) bool { return strings.HasPrefix(k, "bans.flapping.") }) {
		if err := x.bans.SetFlapping(flappingOptions(cfg)); err != nil {
			failed = append(failed, "bans.flapping")
		} else {
			old.Bans.Flapping = cfg.Bans.Flapping
			x.log.Info("flapping detection changed", "max_connects", cfg.Bans.Flapping.MaxConnects)
		}
	}
	if slices.ContainsFunc(changed, func(k string) bool { return strings.HasPrefix(k, "auth.http.") }) {
		switch {
		case x.http == nil || !cfg.Auth.HTTP.Enabled():
			failed = append(failed, "auth.http (turning it on or off)")
		default:
			opts, err := httpAuthOptions(&cfg.Auth.HTTP, x.log.With("component", "http-auth"))
			if err == nil {
				err = x.http.Update(opts)
			}
			if err != nil {
				x.log.Error("auth.http not reloaded", "err", err)
				failed = append(failed, "auth.http")
			} else {
				old.Auth.HTTP = cfg.Auth.HTTP
				x.log.Info("HTTP auth settings reloaded")
			}
		}
	}
	return failed
}

func flappingOptions(cfg *config.Config) ban.FlappingOptions {
	f := cfg.Bans.Flapping
	return ban.FlappingOptions{MaxConnects: f.MaxConnects, Window: time.Duration(f.Window), BanFor: time.Duration(f.BanTime)}
}

func jwtOptions(j *config.JWT, log *slog.Logger) (jwt.Options, error) {
	o := jwt.Options{From: j.From, AuthMethod: j.AuthMethod, Algorithms: j.Algorithms, JWKSURL: j.JWKSURL,
		JWKSRefresh: time.Duration(j.JWKSRefresh), JWKSUnknownKID: time.Duration(j.JWKSUnknownKID), Issuer: j.Issuer,
		Audience: j.Audience, Leeway: time.Duration(j.Leeway), AllowNoExpiry: !j.RequireExp, Claims: j.Claims,
		UsernameClaim: j.UsernameClaim, ACLClaim: j.ACLClaim, KeepOnExpiry: !j.DisconnectExpiry, CacheSize: j.CacheSize, Logger: log}
	if o.CacheSize == 0 {
		o.CacheSize = -1 // the hook's 0 is its default; the key's 0 is none
	}
	if j.PublicKeyFile != "" {
		data, err := os.ReadFile(j.PublicKeyFile)
		if err != nil {
			return o, fmt.Errorf("auth.jwt.public_key_file: %w", err)
		}
		if o.PublicKeys, err = jwt.ParsePublicKeys(data); err != nil {
			return o, fmt.Errorf("auth.jwt.public_key_file: %w", err)
		}
	}
	if j.HMACSecretFile != "" {
		data, err := os.ReadFile(j.HMACSecretFile)
		if err != nil {
			return o, fmt.Errorf("auth.jwt.hmac_secret_file: %w", err)
		}
		o.HMACSecret = []byte(strings.TrimRight(string(data), "\r\n"))
	}
	if j.JWKSCAFile != "" {
		tc, err := clientTLS(j.JWKSCAFile, "", "")
		if err != nil {
			return o, fmt.Errorf("auth.jwt.jwks_ca_file: %w", err)
		}
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}
	}
	return o, nil
}

func httpAuthOptions(h *config.HTTPAuth, log *slog.Logger) (httpauth.Options, error) {
	o := httpauth.Options{AuthnURL: h.AuthnURL, AuthzURL: h.AuthzURL, Method: h.Method, Headers: h.Headers,
		Response: h.Response, Timeout: time.Duration(h.Timeout), MaxConcurrent: h.MaxConcurrent,
		CacheTTL: time.Duration(h.CacheTTL), NegativeCacheTTL: time.Duration(h.NegativeCacheTTL),
		CacheMaxEntries: h.CacheMaxEntries, OnError: h.OnError, Logger: log}
	if t := h.TLS; t.CAFile != "" || t.CertFile != "" {
		tc, err := clientTLS(t.CAFile, t.CertFile, t.KeyFile)
		if err != nil {
			return o, fmt.Errorf("auth.http.tls: %w", err)
		}
		o.TLS = tc
	}
	return o, nil
}

func webhookOptions(w *config.Webhook, node string, log *slog.Logger) (events.WebhookOptions, error) {
	o := events.WebhookOptions{Name: w.Name, URL: w.URL, Events: w.Events, Topics: w.Topics, Headers: w.Headers,
		NoPayload: w.OmitPayload, QueueSize: w.QueueSize, QueueBytes: int(w.QueueBytes), BatchSize: w.BatchSize,
		BatchDelay: time.Duration(w.BatchDelay), Timeout: time.Duration(w.Timeout), MaxRetries: w.MaxRetries,
		RetryBackoff: time.Duration(w.RetryBackoff), MaxBackoff: time.Duration(w.MaxBackoff), Node: node,
		Logger: log.With("component", "webhook")}
	if w.CAFile != "" || w.CertFile != "" {
		tc, err := clientTLS(w.CAFile, w.CertFile, w.KeyFile)
		if err != nil {
			return o, err
		}
		o.TLS = tc
	}
	return o, nil
}

// clientTLS builds the TLS configuration of a connection the broker makes:
// the CA to verify the server with (none: the system's) and a client
// certificate.
func clientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// banAdapter serves the ban list through the admin API.
type banAdapter struct{ l *ban.List }

var _ admin.Bans = banAdapter{}

func banJSON(b ban.Ban) admin.Ban {
	out := admin.Ban{As: string(b.As), Who: b.Who, Reason: b.Reason, By: b.By, At: b.At}
	if !b.Until.IsZero() {
		u := b.Until
		out.Until = &u
	}
	return out
}

func (a banAdapter) List() []admin.Ban {
	bans := a.l.List()
	out := make([]admin.Ban, len(bans))
	for i, b := range bans {
		out[i] = banJSON(b)
	}
	return out
}

func (a banAdapter) Add(b admin.Ban) (admin.Ban, error) {
	kind, err := ban.ParseKind(b.As)
	if err != nil {
		return b, fmt.Errorf("%w: %v", admin.ErrInvalidBan, err)
	}
	nb := ban.Ban{As: kind, Who: b.Who, Reason: b.Reason, By: b.By}
	if b.Until != nil {
		nb.Until = *b.Until
	}
	got, err := a.l.Add(nb)
	if errors.Is(err, ban.ErrInvalid) {
		err = fmt.Errorf("%w: %v", admin.ErrInvalidBan, err)
	}
	return banJSON(got), err
}

func (a banAdapter) Delete(as, who string) (bool, error) {
	kind, err := ban.ParseKind(as)
	if err != nil {
		return false, fmt.Errorf("%w: %v", admin.ErrInvalidBan, err)
	}
	ok, err := a.l.Delete(kind, who)
	if errors.Is(err, ban.ErrInvalid) {
		err = fmt.Errorf("%w: %v", admin.ErrInvalidBan, err)
	}
	return ok, err
}
