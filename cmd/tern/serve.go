package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/auth"
	"github.com/ternmq/tern/listeners"
)

func version() string { return tern.Version }

type serveFlags struct {
	listen        string
	logLevel      string
	logFormat     string
	maxPacketSize int
	sysInterval   time.Duration
	sec           securityFlags
}

func serveCmd() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the broker",
		Long: `Run the MQTT broker.

With no flags it listens on 127.0.0.1:1883 (loopback only) and allows
anonymous clients there. SIGINT or SIGTERM shut it down gracefully: v5
clients receive DISCONNECT 0x8B (Server shutting down); a second signal
exits at once.

A listener on any other address needs --password-file (or an explicit
--allow-anonymous). SIGHUP reloads the password file, the ACL file and the
TLS certificates.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.listen, "listen", "l", "127.0.0.1:1883", "TCP address for MQTT (\"\" for none)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.IntVar(&f.maxPacketSize, "max-packet-size", 1<<20, "largest packet accepted, in bytes")
	fl.DurationVar(&f.sysInterval, "sys-interval", 10*time.Second, "period of the $SYS topics (negative: off)")
	f.sec.register(fl)
	return cmd
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}

func runServe(ctx context.Context, f serveFlags) error {
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	srv, err := tern.New(&tern.Options{
		Logger:        log,
		MaxPacketSize: f.maxPacketSize,
		SysInterval:   f.sysInterval,
	})
	if err != nil {
		return err
	}
	_, reload, err := f.sec.setup(srv, f.listen, log)
	if err != nil {
		srv.Close()
		return err
	}
	if f.listen != "" { // --listen "" turns plain TCP off
		tcp := listeners.NewTCP("tcp", f.listen)
		if err := tcp.Listen(); err != nil {
			srv.Close()
			return err
		}
		if err := srv.AddListener(tcp); err != nil {
			return err
		}
	}
	log.Info("tern starting", "version", tern.Version)
	if err := srv.Serve(); err != nil {
		return err
	}
	defer reloadOnSIGHUP(reload)()
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	if ctx == nil {
		ctx = context.Background()
	}
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		select {
		case <-sig:
			log.Warn("second signal: exiting now")
			os.Exit(1)
		case <-sctx.Done():
		}
	}()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown did not finish cleanly", "err", err)
	}
	log.Info("stopped")
	return nil
}

// securityFlags are the serve flags for TLS, WebSocket, Unix sockets,
// password and ACL files.
type securityFlags struct {
	tlsListen, tlsCert, tlsKey, tlsClientCA, tlsMinVersion string
	tlsIdentity                                            bool
	wsListen, wsPath, wssListen                            string
	unixPath                                               string
	passwordFile, aclFile                                  string
	allowAnonymous                                         bool
}

func (s *securityFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&s.tlsListen, "tls-listen", "", "address for MQTT over TLS (e.g. 0.0.0.0:8883)")
	fl.StringVar(&s.tlsCert, "tls-cert", "", "PEM certificate chain for TLS and secure WebSocket")
	fl.StringVar(&s.tlsKey, "tls-key", "", "PEM private key for TLS and secure WebSocket")
	fl.StringVar(&s.tlsClientCA, "tls-client-ca", "", "PEM CA file: require client certificates signed by it")
	fl.StringVar(&s.tlsMinVersion, "tls-min-version", "1.2", "lowest TLS version accepted: 1.2 or 1.3")
	fl.BoolVar(&s.tlsIdentity, "tls-use-identity-as-username", false, "use the client certificate's CN (or first SAN) as the user name (needs --tls-client-ca)")
	fl.StringVar(&s.wsListen, "ws-listen", "", "address for MQTT over WebSocket (e.g. 0.0.0.0:8083)")
	fl.StringVar(&s.wsPath, "ws-path", listeners.DefaultWebSocketPath, "HTTP path of the WebSocket endpoints")
	fl.StringVar(&s.wssListen, "wss-listen", "", "address for MQTT over secure WebSocket (e.g. 0.0.0.0:8084; uses --tls-cert/--tls-key)")
	fl.StringVar(&s.unixPath, "unix", "", "path of a Unix socket to listen on")
	fl.StringVar(&s.passwordFile, "password-file", "", "Mosquitto-format password file (see tern passwd); clients must log in")
	fl.StringVar(&s.aclFile, "acl-file", "", "Mosquitto-format ACL file; what it does not allow is denied")
	fl.BoolVar(&s.allowAnonymous, "allow-anonymous", false, "with --password-file, also let clients without a user name in; allows non-loopback listeners without one")
}

// isLoopback reports whether a listen address is on a loopback interface
// only. A host name other than localhost, or no host (all interfaces), is
// not.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkExposure refuses listeners anyone on the network could use without
// logging in: a non-loopback listener needs --password-file or
// --allow-anonymous (or, for TLS ones, --tls-client-ca).
func (s *securityFlags) checkExposure(tcpListen string) error {
	if s.passwordFile != "" || s.allowAnonymous {
		return nil
	}
	for _, l := range []struct {
		flag, addr string
		tls        bool
	}{{"--listen", tcpListen, false}, {"--tls-listen", s.tlsListen, true}, {"--ws-listen", s.wsListen, false}, {"--wss-listen", s.wssListen, true}} {
		if l.addr == "" || isLoopback(l.addr) || l.tls && s.tlsClientCA != "" {
			continue
		}
		return fmt.Errorf("refusing to start: %s %s is reachable from the network, and with neither --password-file nor --allow-anonymous anyone could connect", l.flag, l.addr)
	}
	return nil
}

// setup adds the auth hooks and the TLS, WebSocket and Unix listeners to
// srv (before the TCP listener is added). It returns the listeners it
// opened and a function that reloads the password file, the ACL file and
// the certificates, for SIGHUP.
func (s *securityFlags) setup(srv *tern.Server, tcpListen string, log *slog.Logger) ([]tern.Listener, func(), error) {
	if err := s.checkExposure(tcpListen); err != nil {
		return nil, nil, err
	}
	if tcpListen == "" && s.tlsListen == "" && s.wsListen == "" && s.wssListen == "" && s.unixPath == "" {
		return nil, nil, errors.New("no listener: give --listen, --tls-listen, --ws-listen, --wss-listen or --unix")
	}
	type reloader struct {
		what   string
		reload func() error
	}
	var reloads []reloader
	if s.passwordFile != "" {
		h, err := auth.NewPasswordFile(s.passwordFile, auth.PasswordOptions{AllowAnonymous: s.allowAnonymous})
		if err != nil {
			return nil, nil, err
		}
		srv.AddHook(h)
		reloads = append(reloads, reloader{"password file", h.Reload})
		log.Info("password file loaded", "file", s.passwordFile, "users", h.Len(), "allow_anonymous", s.allowAnonymous)
	}
	if s.aclFile != "" {
		h, err := auth.NewACL(s.aclFile)
		if err != nil {
			return nil, nil, err
		}
		srv.AddHook(h)
		reloads = append(reloads, reloader{"ACL file", h.Reload})
		log.Info("ACL file loaded", "file", s.aclFile)
	}
	var st *listeners.ServerTLS
	if s.tlsListen != "" || s.wssListen != "" {
		minVersion, err := listeners.ParseTLSVersion(s.tlsMinVersion)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-min-version: %w", err)
		}
		st, err = listeners.NewServerTLS(listeners.TLSOptions{CertFile: s.tlsCert, KeyFile: s.tlsKey,
			ClientCAFile: s.tlsClientCA, MinVersion: minVersion, IdentityAsUsername: s.tlsIdentity})
		if err != nil {
			return nil, nil, fmt.Errorf("TLS (--tls-cert, --tls-key, --tls-client-ca): %w", err)
		}
		reloads = append(reloads, reloader{"TLS certificates", st.Reload})
	}
	var ls []tern.Listener
	add := func(l interface {
		tern.Listener
		Listen() error
	}) error {
		if err := l.Listen(); err != nil {
			return err
		}
		ls = append(ls, l)
		return srv.AddListener(l)
	}
	if s.tlsListen != "" {
		if err := add(listeners.NewTLS("tls", s.tlsListen, st)); err != nil {
			return nil, nil, err
		}
	}
	for _, w := range []struct{ id, addr string }{{"ws", s.wsListen}, {"wss", s.wssListen}} {
		if w.addr == "" {
			continue
		}
		l := listeners.NewWebSocket(w.id, w.addr)
		l.Path = s.wsPath
		if w.id == "wss" {
			l.TLSConfig, l.IdentityAsUsername = st.Config(), st.IdentityAsUsername()
		}
		if err := add(l); err != nil {
			return nil, nil, err
		}
	}
	if s.unixPath != "" {
		if err := add(listeners.NewUnix("unix", s.unixPath)); err != nil {
			return nil, nil, err
		}
	}
	reload := func() {
		for _, r := range reloads {
			if err := r.reload(); err != nil {
				log.Error("reload failed; keeping the previous "+r.what, "err", err)
			} else {
				log.Info("reloaded " + r.what)
			}
		}
	}
	return ls, reload, nil
}

// reloadOnSIGHUP calls reload on each SIGHUP until the returned function
// is called.
func reloadOnSIGHUP(reload func()) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				reload()
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(hup); close(done) }
}
