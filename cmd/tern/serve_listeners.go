package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/hooks/auth"
	"github.com/ternmq/tern/internal/config"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
)

// mqttSetup is what setupMQTT made: the listeners, what SIGHUP reloads,
// and the TLS certificates in use.
type mqttSetup struct {
	listeners []tern.Listener
	reloads   []reloader
	certs     []namedTLS
}

// namedTLS is a TLS configuration and the listeners that use it.
type namedTLS struct {
	name string // "tls", "tls[1]", "tls, wss" ...
	st   *listeners.ServerTLS
}

// setupMQTT adds to srv the auth hooks and the MQTT listeners cfg
// describes, opening every listener now so that a port in use is an error
// at start. A listener's own settings (config.PerListener) apply to it:
// its authentication and ACL replace the auth section's, its certificate
// the tls section's.
func setupMQTT(srv *tern.Server, cfg *config.Config, log *slog.Logger) (*mqttSetup, error) {
	out := &mqttSetup{}
	if err := setupAuth(srv, cfg, log, out); err != nil {
		return nil, err
	}

	l := &cfg.Listeners
	var shared *listeners.ServerTLS // the tls section's, for the listeners without their own
	tlsFor := func(name string, own *config.PerListener) (*listeners.ServerTLS, error) {
		t := &cfg.TLS
		minVersion, err := listeners.ParseTLSVersion(t.MinVersion)
		if err != nil {
			return nil, fmt.Errorf("tls.min_version: %w", err)
		}
		suites, err := listeners.ParseCipherSuites(t.CipherSuites)
		if err != nil {
			return nil, fmt.Errorf("tls.cipher_suites: %w", err)
		}
		opts := listeners.TLSOptions{CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile,
			MinVersion: minVersion, CipherSuites: suites, IdentityAsUsername: t.UseIdentityAsUsername}
		what := "tls (cert_file, key_file, client_ca_file)"
		if own.OwnTLS() {
			if own.CertFile != "" {
				opts.CertFile, opts.KeyFile = own.CertFile, own.KeyFile
			}
			if own.ClientCAFile != "" {
				opts.ClientCAFile = own.ClientCAFile
			}
			what = "listeners." + name + " (cert_file, key_file, client_ca_file)"
		} else if shared != nil {
			return shared, nil
		}
		if opts.IdentityAsUsername && opts.ClientCAFile == "" {
			opts.IdentityAsUsername = false // a listener of its own without client certificates
		}
		st, err := listeners.NewServerTLS(opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, fileHint(err))
		}
		if !own.OwnTLS() {
			shared, name = st, "tls"
		}
		out.certs = append(out.certs, namedTLS{name, st})
		out.reloads = append(out.reloads, reloader{"TLS certificates (" + name + ")", func() error {
			if err := st.Reload(); err != nil {
				return fileHint(err)
			}
			checkCertificate(log, name, st)
			return nil
		}})
		checkCertificate(log, name, st)
		return st, nil
	}

	add := func(l interface {
		tern.Listener
		Listen() error
	}) error {
		if err := l.Listen(); err != nil {
			return fmt.Errorf("listener %s: %w", l.ID(), err)
		}
		out.listeners = append(out.listeners, l)
		return srv.AddListener(l)
	}
	for i, n := range l.TCP {
		t := listeners.NewTCP(listenerID("tcp", i, len(l.TCP)), n.Address)
		t.Proxy = proxy(n.ProxyProtocol, n.ProxyTrusted)
		t.MaxConnections, t.MaxConnectionRate = n.MaxConnections, n.MaxConnectionRate
		if err := add(t); err != nil {
			return nil, err
		}
	}
	for i, n := range l.TLS {
		id := listenerID("tls", i, len(l.TLS))
		st, err := tlsFor(id, &n.PerListener)
		if err != nil {
			return nil, err
		}
		t := listeners.NewTLS(id, n.Address, st)
		t.Proxy = proxy(n.ProxyProtocol, n.ProxyTrusted)
		t.MaxConnections, t.MaxConnectionRate = n.MaxConnections, n.MaxConnectionRate
		if err := add(t); err != nil {
			return nil, err
		}
	}
	for _, g := range []struct {
		kind string
		ls   []config.WSListener
	}{{"ws", l.WS}, {"wss", l.WSS}} {
		for i, n := range g.ls {
			id := listenerID(g.kind, i, len(g.ls))
			w := listeners.NewWebSocket(id, n.Address)
			w.Path = l.WSPath
			if n.Path != "" {
				w.Path = n.Path
			}
			w.Proxy = proxy(n.ProxyProtocol, n.ProxyTrusted)
			w.MaxConnections, w.MaxConnectionRate = n.MaxConnections, n.MaxConnectionRate
			if g.kind == "wss" {
				st, err := tlsFor(id, &n.PerListener)
				if err != nil {
					return nil, err
				}
				w.TLSConfig, w.IdentityAsUsername = st.Config(), st.IdentityAsUsername()
			}
			if err := add(w); err != nil {
				return nil, err
			}
		}
	}
	for i, n := range l.Unix {
		u := listeners.NewUnix(listenerID("unix", i, len(l.Unix)), n.Path)
		mode, err := n.FileMode()
		if err != nil {
			return nil, fmt.Errorf("listeners.unix[%d].mode: %w", i, err)
		}
		u.Mode = mode
		u.MaxConnections, u.MaxConnectionRate = n.MaxConnections, n.MaxConnectionRate
		if err := add(u); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// setupAuth adds the password file and ACL hooks: the auth section's for
// every listener, or, when a listener has authentication settings of its
// own, a hook that applies to each client those of its listener.
func setupAuth(srv *tern.Server, cfg *config.Config, log *slog.Logger, out *mqttSetup) error {
	global, err := loadAuth("auth", cfg.Auth.PasswordFile, cfg.Auth.ACLFile, cfg.Auth.AllowAnonymous, log, out)
	if err != nil {
		return err
	}
	own := make(map[string]*authSet)
	ownOf := func(kind string, i, n int, p *config.PerListener) error {
		if !p.OwnAuth() {
			return nil
		}
		id := listenerID(kind, i, n)
		anon := p.AllowAnonymous != nil && *p.AllowAnonymous
		set, err := loadAuth("listeners."+id, p.PasswordFile, p.ACLFile, anon, log, out)
		if err != nil {
			return err
		}
		own[id] = set
		return nil
	}
	l := &cfg.Listeners
	for i, n := range l.TCP {
		if err := ownOf("tcp", i, len(l.TCP), &n.PerListener); err != nil {
			return err
		}
	}
	for i, n := range l.TLS {
		if err := ownOf("tls", i, len(l.TLS), &n.PerListener); err != nil {
			return err
		}
	}
	for i, n := range l.WS {
		if err := ownOf("ws", i, len(l.WS), &n.PerListener); err != nil {
			return err
		}
	}
	for i, n := range l.WSS {
		if err := ownOf("wss", i, len(l.WSS), &n.PerListener); err != nil {
			return err
		}
	}
	for i, n := range l.Unix {
		if err := ownOf("unix", i, len(l.Unix), &n.PerListener); err != nil {
			return err
		}
	}
	if len(own) == 0 { // one set for all: the hooks themselves
		if global.pw != nil {
			if err := srv.AddHook(global.pw); err != nil {
				return err
			}
		}
		if global.acl != nil {
			return srv.AddHook(global.acl)
		}
		return nil
	}
	return srv.AddHook(&listenerAuth{global: global, own: own})
}

// authSet is the authentication and ACL of some listeners.
type authSet struct {
	pw   *auth.PasswordFile // nil: none
	acl  *auth.ACL          // nil: none
	anon bool               // allow_anonymous
	// open: no password file and allow_anonymous unset in the auth
	// section, where everyone may connect (as without any hook).
	open bool
}

// loadAuth loads a password file and an ACL file (either may be "").
func loadAuth(where, pwFile, aclFile string, anon bool, log *slog.Logger, out *mqttSetup) (*authSet, error) {
	set := &authSet{anon: anon, open: where == "auth" && pwFile == ""}
	if pwFile != "" {
		h, err := auth.NewPasswordFile(pwFile, auth.PasswordOptions{AllowAnonymous: anon})
		if err != nil {
			return nil, fmt.Errorf("%s.password_file: %w", where, fileHint(err))
		}
		set.pw = h
		out.reloads = append(out.reloads, reloader{"password file " + pwFile, func() error { return fileHint(h.Reload()) }})
		log.Info("password file loaded", "for", where, "file", pwFile, "users", h.Len(), "allow_anonymous", anon)
	}
	if aclFile != "" {
		h, err := auth.NewACL(aclFile)
		if err != nil {
			return nil, fmt.Errorf("%s.acl_file: %w", where, fileHint(err))
		}
		set.acl = h
		out.reloads = append(out.reloads, reloader{"ACL file " + aclFile, func() error { return fileHint(h.Reload()) }})
		log.Info("ACL file loaded", "for", where, "file", aclFile)
	}
	return set, nil
}

// listenerAuth applies to each client the authentication and ACL of the
// listener it came through: the listener's own, or the auth section's.
type listenerAuth struct {
	global *authSet
	own    map[string]*authSet // by listener id
}

var (
	_ tern.Authenticator = (*listenerAuth)(nil)
	_ tern.Authorizer    = (*listenerAuth)(nil)
)

func (*listenerAuth) ID() string { return "per-listener-auth" }

func (a *listenerAuth) set(listener string) *authSet {
	if s, ok := a.own[listener]; ok {
		return s
	}
	return a.global
}

// Authenticate implements tern.Authenticator, as the listener's password
// file would.
func (a *listenerAuth) Authenticate(c *tern.Client, pk *packets.Connect) tern.Decision {
	set := a.set(c.Listener())
	switch {
	case set.pw != nil:
		return set.pw.Authenticate(c, pk)
	case set.open || certIdentity(c) != "":
		return tern.Allow // no password file: as without a hook; or a verified certificate
	case pk.Username == "" && set.anon:
		return tern.Allow
	}
	return tern.Deny
}

// Authorize implements tern.Authorizer with the listener's ACL. A client
// whose listener is not known (a session restored from the store, asked
// about deliveries while offline) must be allowed by every ACL there is,
// so that no listener's rules are passed by.
func (a *listenerAuth) Authorize(c *tern.Client, topic string, access tern.Access) tern.Decision {
	if set, ok := a.own[c.Listener()]; ok || c.Listener() != "" {
		if !ok {
			set = a.global
		}
		if set.acl == nil {
			return tern.Abstain
		}
		return set.acl.Authorize(c, topic, access)
	}
	d := tern.Abstain
	for _, set := range append([]*authSet{a.global}, values(a.own)...) {
		if set.acl == nil {
			continue
		}
		switch set.acl.Authorize(c, topic, access) {
		case tern.Deny:
			return tern.Deny
		case tern.Allow:
			d = tern.Allow
		}
	}
	return d
}

// certIdentity returns the identity of the client's verified certificate
// (TLS listeners with use_identity_as_username), or "".
func certIdentity(c *tern.Client) string {
	if id, ok := c.Conn().(interface{ Identity() string }); ok {
		return id.Identity()
	}
	return ""
}

func values[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// fileHint adds to an error about a file that could not be read for lack
// of permission which user needs to read it: the container image runs as
// uid 65532, and tern passwd writes files of mode 0600.
func fileHint(err error) error {
	var pe *fs.PathError
	if !errors.Is(err, fs.ErrPermission) || !errors.As(err, &pe) {
		return err
	}
	owner := ""
	if fi, serr := os.Stat(pe.Path); serr == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			owner = fmt.Sprintf("; it belongs to uid %d gid %d with mode %04o", st.Uid, st.Gid, fi.Mode().Perm())
		}
	}
	uid, gid := os.Getuid(), os.Getgid()
	return fmt.Errorf("%w: tern runs as uid %d gid %d, which cannot read it%s: make it readable by uid %d "+
		"(chown %d %s, keeping mode 0600; or mode 0640 with group %d); in a container, change the file mounted there on the host",
		err, uid, gid, owner, uid, uid, pe.Path, gid)
}

// certificateWarnBefore is how long before its expiry a certificate is
// warned about at start and reload.
const certificateWarnBefore = 14 * 24 * time.Hour

// checkCertificate logs a certificate's validity: a warning, with its
// dates, when it is expired, not yet valid or expires within two weeks.
func checkCertificate(log *slog.Logger, name string, st *listeners.ServerTLS) {
	c := st.Certificate()
	if c == nil {
		return
	}
	now := time.Now()
	args := []any{"listener", name, "file", st.CertFile(), "subject", c.Subject.String(),
		"not_before", c.NotBefore.UTC().Format(time.RFC3339), "not_after", c.NotAfter.UTC().Format(time.RFC3339)}
	switch {
	case now.Before(c.NotBefore):
		log.Warn("TLS certificate is not valid yet: clients will refuse it", args...)
	case now.After(c.NotAfter):
		log.Warn("TLS certificate has expired: clients will refuse it", args...)
	case c.NotAfter.Sub(now) < certificateWarnBefore:
		log.Warn("TLS certificate expires soon", append(args, "in", c.NotAfter.Sub(now).Round(time.Hour).String())...)
	default:
		log.Info("TLS certificate", args...)
	}
}

// certificates returns the certificates in use, for the metrics.
func (m *mqttSetup) certificates() []admin.Certificate {
	var out []admin.Certificate
	for _, n := range m.certs {
		if c := n.st.Certificate(); c != nil {
			out = append(out, admin.Certificate{Name: n.name, File: n.st.CertFile(), NotBefore: c.NotBefore, NotAfter: c.NotAfter})
		}
	}
	return out
}

// listenerID names a listener after its configuration key: "tcp" when it
// is the only one of its kind, else "tcp[0]", "tcp[1]", ...
func listenerID(kind string, i, n int) string {
	if n == 1 {
		return kind
	}
	return fmt.Sprintf("%s[%d]", kind, i)
}

func proxy(on bool, trusted []string) *listeners.ProxyProtocol {
	if !on {
		return nil
	}
	return &listeners.ProxyProtocol{Trusted: trusted}
}
