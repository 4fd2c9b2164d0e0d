package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/bridge"
	"github.com/ternmq/tern/internal/config"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/pebblestore"
)

// version describes the build: "0.1.0 (1a2b3c4d5e6f) go1.26.8 linux/amd64".
func version() string {
	v := tern.Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
	}
	return v + " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
}

func serveCmd() *cobra.Command {
	var configFile string
	var printConfig bool
	cmd := &cobra.Command{
		Use:   "serve [-c tern.yaml] [flags]",
		Short: "Run the broker",
		Long: `Run the MQTT broker.

With no configuration it listens on 127.0.0.1:1883 (loopback only) and
allows anonymous clients there, with the admin API and /metrics on
127.0.0.1:18083. A listener on any other address needs a password file
(or allow_anonymous on purpose).

Every setting is a key of the YAML file given with -c (see
tern.example.yaml), an environment variable (TERN_ and the key in capitals:
limits.max_qos is TERN_LIMITS_MAX_QOS) and a flag below; flags win over
the environment, which wins over the file. --print-config shows the result.
A list flag (--listen, ...) may be repeated; a switch that is on by default
is turned off with =false (--retain-available=false).

Signals: SIGTERM or SIGINT drain gracefully (/readyz turns 503, the
listeners close, v5 clients receive DISCONNECT 0x8B Server shutting down);
a second one exits at once. SIGHUP reloads the password file, the ACL
file, the TLS certificates, the log level, the bridges, the ban list's file
and the auth.http and bans.flapping settings.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile == "" {
				configFile = os.Getenv(config.EnvConfigFile)
			}
			load := func() (*config.Config, error) { return config.Load(configFile, os.Environ(), cmd.Flags()) }
			cfg, err := load()
			if err != nil {
				return err
			}
			if printConfig {
				out, err := cfg.YAML()
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(out)
				return err
			}
			sig := make(chan os.Signal, 2)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			defer signal.Stop(sig)
			b, err := startBroker(cfg, load, os.Stderr)
			if err != nil {
				return err
			}
			return b.run(cmd.Context(), sig, os.Exit)
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVarP(&configFile, "config", "c", "", "YAML configuration file (default $TERN_CONFIG)")
	fl.BoolVar(&printConfig, "print-config", false, "print the effective configuration as YAML and exit")
	config.RegisterFlags(fl)
	return cmd
}

// broker is a running tern serve: the server, its listeners, its admin
// interface, and what SIGHUP reloads.
type broker struct {
	cfg     *config.Config
	load    func() (*config.Config, error) // reads the configuration again, for SIGHUP
	log     *slog.Logger
	level   *slog.LevelVar
	srv     *tern.Server
	store   storage.Store // nil when persistence.durability is off
	mqtt    []tern.Listener
	reloads []reloader
	bridges *bridge.Manager
	ext     *extAuth // the ban list, JWT and HTTP auth, events

	adm      *admin.Server // always there; it serves only when admin.listen is set
	admLn    net.Listener
	admDone  chan error
	watchdog chan struct{} // closed to stop the systemd watchdog pings
	trimDone chan struct{} // closed to stop the memory trimmer
}

// reloader re-reads one file on SIGHUP.
type reloader struct {
	what   string
	reload func() error
}

// newLogger returns a text or JSON logger writing to w at level.
func newLogger(format string, level slog.Leveler, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// openStore opens the store of persistence.data_dir; tests replace it.
var openStore = func(dir string, log *slog.Logger) (storage.Store, error) {
	return pebblestore.Open(dir, pebblestore.Options{Logger: log}) // which adds component=pebble
}

// restoreLogEvery is the period of the progress lines of a long restore.
var restoreLogEvery = 2 * time.Second

// startBroker starts the broker cfg describes, logging to logOut: the
// admin interface first, so that /healthz answers and /readyz says how the
// restore from the store is going (503, state restoring, progress), then
// the store and the MQTT listeners. It tells systemd READY=1 when
// NOTIFY_SOCKET is set. load, when not nil, reads the configuration again
// on reload.
func startBroker(cfg *config.Config, load func() (*config.Config, error), logOut io.Writer) (_ *broker, err error) {
	level := new(slog.LevelVar)
	level.Set(cfg.Log.SlogLevel())
	log := newLogger(cfg.Log.Format, level, logOut)
	logIgnoredEnv(log, cfg)
	b := &broker{cfg: cfg, load: load, log: log, level: level}
	defer func() {
		if err == nil {
			return
		}
		if b.srv != nil {
			b.srv.Close()
		}
		if b.store != nil {
			b.store.Close()
		}
		if b.admLn != nil {
			b.adm.Shutdown(context.Background())
			<-b.admDone
		}
		b.ext.close()
	}()
	var setup *mqttSetup // the listeners, once made, for the certificate metrics
	var setupDone atomic.Bool
	obs := admin.NewObserver()
	b.adm = admin.New(nil, admin.Options{APIKeys: apiKeys(cfg), Tokens: tokens(cfg), Observer: obs, Logger: log,
		AllowedHosts: allowedHosts(cfg), CORSOrigins: cfg.Admin.CORSOrigins,
		Certificates: func() []admin.Certificate {
			if !setupDone.Load() {
				return nil
			}
			return setup.certificates()
		}})
	if cfg.Admin.Listen != "" {
		if b.admLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			return nil, fmt.Errorf("admin.listen: %w", err)
		}
		b.admDone = make(chan error, 1)
		go func() { b.admDone <- b.adm.Serve(b.admLn) }()
		log.Info("admin API listening", "addr", b.admLn.Addr().String(), "auth", len(cfg.Admin.APIKeys) > 0 || cfg.Admin.Token != "")
	}

	log.Info("tern starting", "version", tern.Version)
	opts := cfg.ServerOptions(log)
	if cfg.Persistence.Durability != "off" {
		st, err := openStore(cfg.Persistence.DataDir, log)
		if err != nil {
			return nil, fmt.Errorf("persistence.data_dir: %w", err)
		}
		b.store = st
		opts.Store = b.adm.ObserveStore(st)
		log.Info("persistence", "data_dir", cfg.Persistence.DataDir, "durability", cfg.Persistence.Durability)
	}
	stopProgress := b.logRestoreProgress()
	b.srv, err = tern.New(opts)
	stopProgress()
	if err != nil {
		return nil, err
	}
	if err := b.srv.AddHook(obs); err != nil { // before Serve
		return nil, err
	}
	// Before the password and ACL files: the chain is ban list, JWT, HTTP,
	// password file (and for authorization JWT, HTTP, ACL file).
	if b.ext, err = setupExtAuth(b.srv, cfg, log); err != nil {
		return nil, err
	}
	// Bridges run even when none is configured, so that SIGHUP can add some.
	bcfgs, err := cfg.BridgeConfigs()
	if err != nil {
		return nil, err
	}
	if b.bridges, err = bridge.NewManager(log, bcfgs...); err != nil {
		return nil, err
	}
	if err := b.srv.AddHook(b.bridges); err != nil {
		return nil, err
	}
	if len(bcfgs) > 0 {
		log.Info("bridges", "count", len(bcfgs), "node_id", b.srv.NodeID())
	}
	if b.ext.bans != nil {
		b.adm.ServeBans(banAdapter{b.ext.bans})
	}
	bh := b.bridges.Handler()
	b.adm.Handle("/api/v1/bridges", bh)
	b.adm.Handle("/api/v1/bridges/", bh)
	b.adm.Registry().MustRegister(b.bridges.Collector())
	b.adm.Registry().MustRegister(b.ext.collectors()...)
	b.adm.SetServer(b.srv)
	if cfg.Log.ConnectionMessages {
		if err := b.srv.AddHook(connectionLog{log}); err != nil {
			return nil, err
		}
	}
	if setup, err = setupMQTT(b.srv, cfg, log); err != nil {
		return nil, err
	}
	setupDone.Store(true)
	b.mqtt, b.reloads = setup.listeners, append(setup.reloads, b.ext.reloaders()...)
	if err = b.srv.Serve(); err != nil {
		return nil, err
	}
	notify(log, daemon.SdNotifyReady)
	b.startWatchdog()
	b.trimDone = make(chan struct{})
	startMemoryTrim(log, b.trimDone)
	return b, nil
}

// logRestoreProgress logs, every restoreLogEvery while the store is read,
// how far the restore has got and how long it should still take; it
// returns the function that stops it.
func (b *broker) logRestoreProgress() (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(restoreLogEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			p, ok := b.adm.RestoreProgress()
			if !ok {
				continue
			}
			args := []any{"records", p.Records, "messages", p.Messages, "sessions", p.Sessions,
				"subscriptions", p.Subscriptions, "queued_or_inflight", p.Deliveries, "retained", p.Retained,
				"elapsed", p.Elapsed.Round(100 * time.Millisecond).String()}
			switch {
			case p.Loaded:
				b.log.Info("restoring from the store: every record read, finishing", args...)
			case p.EstimatedRecords > p.Records:
				args = append(args, "estimated_records", p.EstimatedRecords,
					"percent", fmt.Sprintf("%.0f", 100*float64(p.Records)/float64(p.EstimatedRecords)),
					"remaining", p.Remaining.Round(100*time.Millisecond).String())
				b.log.Info("restoring from the store", args...)
			default:
				b.log.Info("restoring from the store", args...)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// logIgnoredEnv logs the TERN_ variables that are no configuration key:
// Kubernetes' service links at DEBUG, others at DEBUG too unless their
// name is close to a key's, a likely misspelling, which gets a warning.
func logIgnoredEnv(log *slog.Logger, cfg *config.Config) {
	for _, v := range cfg.IgnoredEnv() {
		switch {
		case v.Suggest != "":
			log.Warn("environment variable ignored: it is no configuration key", "variable", v.Name, "did_you_mean", v.Suggest)
		case v.ServiceLink:
			log.Debug("environment variable ignored: a Kubernetes service link, no configuration key", "variable", v.Name)
		default:
			log.Debug("environment variable ignored: it is no configuration key", "variable", v.Name)
		}
	}
}

func apiKeys(cfg *config.Config) map[string]string {
	keys := make(map[string]string)
	for _, k := range cfg.Admin.APIKeys {
		keys[k.Key] = k.Secret
	}
	return keys
}

func tokens(cfg *config.Config) []string {
	if cfg.Admin.Token == "" {
		return nil
	}
	return []string{cfg.Admin.Token}
}

// allowedHosts are admin.allowed_hosts and the host of admin.listen.
func allowedHosts(cfg *config.Config) []string {
	out := slices.Clone(cfg.Admin.AllowedHosts)
	if h, _, err := net.SplitHostPort(cfg.Admin.Listen); err == nil && h != "" {
		out = append(out, h)
	}
	return out
}

// run serves until ctx ends or SIGINT or SIGTERM arrives on sig, reloading
// on each SIGHUP, then shuts down gracefully. A second SIGINT or SIGTERM
// during the shutdown calls exit(1).
func (b *broker) run(ctx context.Context, sig <-chan os.Signal, exit func(int)) error {
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				b.reload()
				continue
			}
			b.log.Info("shutting down", "signal", s.String())
		case <-ctx.Done():
			b.log.Info("shutting down", "reason", context.Cause(ctx).Error())
		}
		return b.shutdown(sig, exit)
	}
}

// shutdown drains: /readyz turns 503, the listeners keep accepting for
// drain_delay, then Shutdown closes them and disconnects every client
// (v5 clients with 0x8B) within shutdown_timeout.
func (b *broker) shutdown(sig <-chan os.Signal, exit func(int)) error {
	notify(b.log, daemon.SdNotifyStopping)
	if b.trimDone != nil {
		close(b.trimDone)
	}
	if b.watchdog != nil {
		close(b.watchdog)
	}
	b.adm.SetReady(false)
	done := make(chan struct{})
	defer close(done)
	hurry := make(chan struct{}) // closed on a second signal, if exit returns
	go func() {
		for {
			select {
			case s := <-sig:
				if s == syscall.SIGHUP {
					continue
				}
				b.log.Warn("second signal: exiting now", "signal", s.String())
				exit(1)
				close(hurry)
				return
			case <-done:
				return
			}
		}
	}()
	if d := time.Duration(b.cfg.DrainDelay); d > 0 {
		b.log.Info("draining: not ready, still serving", "for", d.String())
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-hurry:
			t.Stop()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(b.cfg.ShutdownTimeout))
	defer cancel()
	if err := b.srv.Shutdown(ctx); err != nil && !errors.Is(err, tern.ErrServerClosed) {
		b.log.Warn("shutdown did not finish in time; connections closed", "err", err)
	}
	if b.store != nil {
		if err := b.store.Close(); err != nil {
			b.log.Error("closing the store", "err", err)
		}
	}
	if b.admDone != nil {
		actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer acancel()
		b.adm.Shutdown(actx)
		if err := <-b.admDone; err != nil {
			b.log.Warn("admin API", "err", err)
		}
	}
	b.log.Info("stopped")
	return nil
}

// reload is SIGHUP: it reads the configuration again and applies the log
// level and the auth.http and bans.flapping settings, and re-reads the
// password file, the ACL file, the TLS certificates and the ban list. A
// file that does not load leaves the old one in force. Other changed
// settings are reported as needing a restart.
func (b *broker) reload() {
	notify(b.log, daemon.SdNotifyReloading+"\n"+daemon.SdNotifyMonotonicUsec())
	defer notify(b.log, daemon.SdNotifyReady)
	b.log.Info("reloading")
	if b.load != nil {
		cfg, err := b.load()
		switch {
		case err != nil:
			b.log.Error("configuration not reloaded; the one in force stays", "err", err)
		default:
			var restart []string
			for _, k := range config.Changed(b.cfg, cfg) {
				if k != "log.level" && k != "bridges" && !liveKeys(k) {
					restart = append(restart, k)
				}
			}
			b.reloadBridges(cfg)
			restart = append(restart, b.ext.reload(b.cfg, cfg)...)
			if cfg.Log.Level != b.cfg.Log.Level {
				b.level.Set(cfg.Log.SlogLevel())
				b.cfg.Log.Level = cfg.Log.Level
				b.log.Info("log level changed", "level", cfg.Log.Level)
			}
			if len(restart) > 0 {
				b.log.Warn("changed settings take effect at the next restart", "keys", restart)
			}
		}
	}
	runReloads(b.reloads, b.log)
}

// reloadBridges applies the bridges of cfg: unchanged ones keep their
// connection. A configuration that does not work leaves them all as they
// are.
func (b *broker) reloadBridges(cfg *config.Config) {
	bcfgs, err := cfg.BridgeConfigs()
	if err == nil {
		err = b.bridges.Update(bcfgs)
	}
	if err != nil {
		b.log.Error("bridges not reloaded; the ones in force stay", "err", err)
		return
	}
	b.cfg.Bridges = cfg.Bridges
}

func runReloads(rs []reloader, log *slog.Logger) {
	for _, r := range rs {
		if err := r.reload(); err != nil {
			log.Error("reload failed; keeping the previous "+r.what, "err", err)
		} else {
			log.Info("reloaded " + r.what)
		}
	}
}

// notify sends a state to systemd when NOTIFY_SOCKET is set (Type=notify).
func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify", "state", state, "err", err)
	}
}

// startWatchdog pings systemd's watchdog, when the unit sets WatchdogSec,
// until shutdown begins.
func (b *broker) startWatchdog() {
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil || every <= 0 {
		return
	}
	b.watchdog = make(chan struct{})
	go func() {
		t := time.NewTicker(every / 3)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				notify(b.log, daemon.SdNotifyWatchdog)
			case <-b.watchdog:
				return
			}
		}
	}()
}
