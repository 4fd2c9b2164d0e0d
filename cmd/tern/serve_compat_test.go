package main

import (
	"log/slog"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/config"
)

// securityFlags has the shape the serve flags had before the config
// package. serve_security_test.go is written against it; here it drives
// the configuration-based code (config.Config.CheckExposure, setupMQTT) so
// that those tests keep checking what serve does now.
type securityFlags struct {
	tlsListen, tlsCert, tlsKey, tlsClientCA, tlsMinVersion string
	tlsIdentity                                            bool
	wsListen, wsPath, wssListen                            string
	unixPath                                               string
	passwordFile, aclFile                                  string
	allowAnonymous                                         bool
}

// config returns the configuration the flags and a TCP address mean.
func (s *securityFlags) config(tcpListen string) *config.Config {
	c := config.Default()
	c.Persistence.Durability = "off" // these tests are about listeners and auth
	c.Listeners.TCP = nil
	if tcpListen != "" {
		c.Listeners.TCP = []config.NetListener{{Address: tcpListen}}
	}
	if s.tlsListen != "" {
		c.Listeners.TLS = []config.NetListener{{Address: s.tlsListen}}
	}
	if s.wsListen != "" {
		c.Listeners.WS = []config.WSListener{{Address: s.wsListen}}
	}
	if s.wssListen != "" {
		c.Listeners.WSS = []config.WSListener{{Address: s.wssListen}}
	}
	if s.unixPath != "" {
		c.Listeners.Unix = []config.UnixListener{{Path: s.unixPath}}
	}
	if s.wsPath != "" {
		c.Listeners.WSPath = s.wsPath
	}
	c.TLS = config.TLS{CertFile: s.tlsCert, KeyFile: s.tlsKey, ClientCAFile: s.tlsClientCA,
		MinVersion: s.tlsMinVersion, UseIdentityAsUsername: s.tlsIdentity}
	if c.TLS.MinVersion == "" {
		c.TLS.MinVersion = "1.2"
	}
	c.Auth = config.Auth{PasswordFile: s.passwordFile, ACLFile: s.aclFile, AllowAnonymous: s.allowAnonymous}
	c.Admin.Listen = ""
	return c
}

func (s *securityFlags) checkExposure(tcpListen string) error {
	return s.config(tcpListen).CheckExposure()
}

func (s *securityFlags) setup(srv *tern.Server, tcpListen string, log *slog.Logger) ([]tern.Listener, func(), error) {
	cfg := s.config(tcpListen)
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	m, err := setupMQTT(srv, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	return m.listeners, func() { runReloads(m.reloads, log) }, nil
}

func isLoopback(addr string) bool { return config.IsLoopback(addr) }
