package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/ternmq/tern/topics"
)

type subFlags struct {
	clientFlags
	topics     []string
	qos        int
	verbose    bool // -v: print the topic before the payload
	count      int  // -C: exit after this many messages
	noRetained bool // -R: skip messages with the retain flag
	timeout    int  // -W: exit after this many seconds
	noNewline  bool // -N: no newline after each payload
	format     string
}

// errTimedOut is sub's error when -W passes; tern exits with
// exitTimedOut, as mosquitto_sub does.
var errTimedOut = errors.New("timed out")

// exitTimedOut is the exit status of tern sub when -W passes: 27, as
// mosquitto_sub's.
const exitTimedOut = 27

func subCmd() *cobra.Command {
	var f subFlags
	cmd := &cobra.Command{
		Use:   "sub -t filter [-t filter ...] [flags]",
		Short: "Subscribe and print messages, like mosquitto_sub",
		Long: `Subscribe to topic filters on an MQTT broker and print each message
received, like mosquitto_sub: its payload, or with -v its topic and
payload, one message a line.

It runs until interrupted, until -C messages were printed, or until -W
seconds pass (which is an error, exit status 27, as in mosquitto_sub).
-c with -i keeps the session while disconnected, so that messages sent
meanwhile arrive at the next run (MQTT 5: -x sets how long it is kept).
TLS is on when --cafile, --cert, --insecure or --tls-use-os-certs is
given. MQTT 5 is the default; -V mqttv311 for 3.1.1. -d prints the
packets sent and received.

-F prints each message in a format of your own, as mosquitto_sub -F:
%t topic, %p payload, %l length, %q QoS, %r retain, %m message id,
%x/%X payload in hex, %j/%J JSON (J with properties), %I ISO-8601 time,
%U Unix time, %C content type, %D correlation data, %E expiry, %F
payload format, %P user properties, %R response topic, %S subscription
identifier, %A topic alias, %% a percent sign; @Y @m @d @H @M @S @z @s
date and time; \n \t escapes. A newline follows unless -N.
` + propertiesHelp,
		Example: `  tern sub -t 'sensors/#' -v
  tern sub -h broker -p 8883 --cafile ca.crt -u alice -P secret -t a/b -C 1 -W 10
  tern sub -t '$SYS/broker/clients/connected' -C 1
  tern sub -t 'sensors/#' -F '%I %t %j'
  tern sub -c -i dashboard -x 3600 -t 'alerts/#' -q 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runSub(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringArrayVarP(&f.topics, "topic", "t", nil, "topic `filter` to subscribe to, repeatable (required)")
	fl.IntVarP(&f.qos, "qos", "q", 0, "maximum quality of service: 0, 1 or 2")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "print the topic before each payload")
	fl.IntVarP(&f.count, "count", "C", 0, "exit after this many messages")
	fl.BoolVarP(&f.noRetained, "retained-skip", "R", false, "do not print retained (stale) messages")
	fl.IntVarP(&f.timeout, "timeout", "W", 0, "exit with an error after this many seconds")
	fl.BoolVarP(&f.noNewline, "no-newline", "N", false, "do not print a newline after each payload")
	fl.StringVarP(&f.format, "format", "F", "", "print each message in this `format` (see above; overrides -v)")
	f.clientFlags.register(fl, "sub")
	return cmd
}

func runSub(cmd *cobra.Command, f *subFlags) error {
	if len(f.topics) == 0 {
		return errors.New("-t filter is required")
	}
	for _, t := range f.topics {
		if err := topics.ValidateFilter(t); err != nil {
			return fmt.Errorf("-t %q: %w", t, err)
		}
	}
	if f.qos < 0 || f.qos > 2 {
		return fmt.Errorf("-q %d: want 0, 1 or 2", f.qos)
	}
	if f.count < 0 || f.timeout < 0 {
		return errors.New("-C and -W must not be negative")
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	f.debugOut = cmd.ErrOrStderr()
	msgs := make(chan message, 64)
	done := make(chan struct{})
	c, err := f.connect(ctx, "sub", func(m message) {
		select {
		case msgs <- m:
		case <-done:
		}
	})
	if err != nil {
		return err
	}
	defer c.disconnect()
	defer close(done) // first: a handler blocked on msgs must not hold up the disconnect
	var expired <-chan time.Time
	if f.timeout > 0 {
		t := time.NewTimer(time.Duration(f.timeout) * time.Second)
		defer t.Stop()
		expired = t.C
	}
	if err := c.subscribe(ctx, f.topics, byte(f.qos)); err != nil {
		return err
	}

	out := bufio.NewWriter(cmd.OutOrStdout())
	defer out.Flush()
	printed := 0
	for {
		select {
		case m := <-msgs:
			if f.noRetained && m.retain {
				continue
			}
			switch {
			case f.format != "":
				out.Write(formatMessage(f.format, m))
			case f.verbose:
				out.WriteString(m.topic)
				out.WriteByte(' ')
				out.Write(m.payload)
			default:
				out.Write(m.payload)
			}
			if !f.noNewline {
				out.WriteByte('\n')
			}
			if err := out.Flush(); err != nil {
				return err
			}
			printed++
			if f.count > 0 && printed >= f.count {
				return nil
			}
		case <-expired:
			return errTimedOut
		case <-c.lost():
			return c.lostErr()
		case <-ctx.Done():
			return nil
		}
	}
}
