package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
)

func version() string { return tern.Version }

type serveFlags struct {
	listen        string
	logLevel      string
	logFormat     string
	maxPacketSize int
	sysInterval   time.Duration
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
exits at once.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.listen, "listen", "l", "127.0.0.1:1883", "TCP address for MQTT")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.IntVar(&f.maxPacketSize, "max-packet-size", 1<<20, "largest packet accepted, in bytes")
	fl.DurationVar(&f.sysInterval, "sys-interval", 10*time.Second, "period of the $SYS topics (negative: off)")
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
	tcp := listeners.NewTCP("tcp", f.listen)
	if err := tcp.Listen(); err != nil {
		return err
	}
	if err := srv.AddListener(tcp); err != nil {
		return err
	}
	log.Info("tern starting", "version", tern.Version)
	if err := srv.Serve(); err != nil {
		return err
	}
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
