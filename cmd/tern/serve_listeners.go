package main

import (
	"fmt"
	"log/slog"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/config"
	"github.com/ternmq/tern/hooks/auth"
	"github.com/ternmq/tern/listeners"
)

// setupMQTT adds to srv the auth hooks and the MQTT listeners cfg
// describes, opening every listener now so that a port in use is an error
// at start. It returns the listeners and what SIGHUP reloads: the password
// file, the ACL file and the TLS certificates.
func setupMQTT(srv *tern.Server, cfg *config.Config, log *slog.Logger) ([]tern.Listener, []reloader, error) {
	var reloads []reloader
	a := &cfg.Auth
	if a.PasswordFile != "" {
		h, err := auth.NewPasswordFile(a.PasswordFile, auth.PasswordOptions{AllowAnonymous: a.AllowAnonymous})
		if err != nil {
			return nil, nil, fmt.Errorf("auth.password_file: %w", err)
		}
		if err := srv.AddHook(h); err != nil {
			return nil, nil, err
		}
		reloads = append(reloads, reloader{"password file", h.Reload})
		log.Info("password file loaded", "file", a.PasswordFile, "users", h.Len(), "allow_anonymous", a.AllowAnonymous)
	}
	if a.ACLFile != "" {
		h, err := auth.NewACL(a.ACLFile)
		if err != nil {
			return nil, nil, fmt.Errorf("auth.acl_file: %w", err)
		}
		if err := srv.AddHook(h); err != nil {
			return nil, nil, err
		}
		reloads = append(reloads, reloader{"ACL file", h.Reload})
		log.Info("ACL file loaded", "file", a.ACLFile)
	}

	l := &cfg.Listeners
	var st *listeners.ServerTLS
	if len(l.TLS)+len(l.WSS) > 0 {
		t := &cfg.TLS
		minVersion, err := listeners.ParseTLSVersion(t.MinVersion)
		if err != nil {
			return nil, nil, fmt.Errorf("tls.min_version: %w", err)
		}
		suites, err := listeners.ParseCipherSuites(t.CipherSuites)
		if err != nil {
			return nil, nil, fmt.Errorf("tls.cipher_suites: %w", err)
		}
		st, err = listeners.NewServerTLS(listeners.TLSOptions{CertFile: t.CertFile, KeyFile: t.KeyFile,
			ClientCAFile: t.ClientCAFile, MinVersion: minVersion, CipherSuites: suites, IdentityAsUsername: t.UseIdentityAsUsername})
		if err != nil {
			return nil, nil, fmt.Errorf("tls (cert_file, key_file, client_ca_file): %w", err)
		}
		reloads = append(reloads, reloader{"TLS certificates", st.Reload})
	}

	var ls []tern.Listener
	add := func(l interface {
		tern.Listener
		Listen() error
	}) error {
		if err := l.Listen(); err != nil {
			return fmt.Errorf("listener %s: %w", l.ID(), err)
		}
		ls = append(ls, l)
		return srv.AddListener(l)
	}
	for i, n := range l.TCP {
		t := listeners.NewTCP(listenerID("tcp", i, len(l.TCP)), n.Address)
		t.Proxy = proxy(n.ProxyProtocol, n.ProxyTrusted)
		if err := add(t); err != nil {
			return nil, nil, err
		}
	}
	for i, n := range l.TLS {
		t := listeners.NewTLS(listenerID("tls", i, len(l.TLS)), n.Address, st)
		t.Proxy = proxy(n.ProxyProtocol, n.ProxyTrusted)
		if err := add(t); err != nil {
			return nil, nil, err
		}
	}
	for _, g := range []struct {
		kind string
		ls   []config.WSListener
	}{{"ws", l.WS}, {"wss", l.WSS}} {
		for i, n := range g.ls {
			w := listeners.NewWebSocket(listenerID(g.kind, i, len(g.ls)), n.Address)
			w.Path = l.WSPath
			if n.Path != "" {
				w.Path = n.Path
			}
			w.Proxy = proxy(n.ProxyProtocol, n.ProxyTrusted)
			if g.kind == "wss" {
				w.TLSConfig, w.IdentityAsUsername = st.Config(), st.IdentityAsUsername()
			}
			if err := add(w); err != nil {
				return nil, nil, err
			}
		}
	}
	for i, n := range l.Unix {
		u := listeners.NewUnix(listenerID("unix", i, len(l.Unix)), n.Path)
		mode, err := n.FileMode()
		if err != nil {
			return nil, nil, fmt.Errorf("listeners.unix[%d].mode: %w", i, err)
		}
		u.Mode = mode
		if err := add(u); err != nil {
			return nil, nil, err
		}
	}
	return ls, reloads, nil
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
