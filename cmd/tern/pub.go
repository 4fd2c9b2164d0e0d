package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/ternmq/tern/topics"
)

type pubFlags struct {
	clientFlags
	topic   string
	message string
	file    string
	stdin   bool // -s: all of standard input is one message
	lines   bool // -l: each line of standard input is a message
	null    bool // -n: an empty message
	qos     int
	retain  bool
}

func pubCmd() *cobra.Command {
	var f pubFlags
	cmd := &cobra.Command{
		Use:   "pub -t topic (-m message | -f file | -s | -l | -n) [flags]",
		Short: "Publish a message, like mosquitto_pub",
		Long: `Publish a message to an MQTT broker, like mosquitto_pub.

The message is given by exactly one of -m (text), -f (a file's contents),
-s (all of standard input), -l (each line of standard input, as its own
message) or -n (an empty message, which with -r clears a retained one).

TLS is on when --cafile, --cert, --insecure or --tls-use-os-certs is
given. MQTT 5 is the default; -V mqttv311 for 3.1.1. -d prints the
packets sent and received.
` + propertiesHelp,
		Example: `  tern pub -t sensors/1/temp -m 21.5 -q 1
  tern pub -h broker -p 8883 --cafile ca.crt -u alice -P secret -t a/b -m hi
  tern pub -t status -r -n            # clear the retained message of "status"
  tail -f log | tern pub -t logs -l
  tern pub -t a -m hi -D publish content-type text/plain -D publish user-property site 7
  tern pub -t a -m hi --will-topic status/me --will-payload gone -d`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPub(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVarP(&f.topic, "topic", "t", "", "topic to publish to (required)")
	fl.StringVarP(&f.message, "message", "m", "", "message to send")
	fl.StringVarP(&f.file, "file", "f", "", "send the contents of `file` as the message")
	fl.BoolVarP(&f.stdin, "stdin-file", "s", false, "send all of standard input as the message")
	fl.BoolVarP(&f.lines, "stdin-line", "l", false, "send each line of standard input as a message")
	fl.BoolVarP(&f.null, "null-message", "n", false, "send an empty message")
	fl.IntVarP(&f.qos, "qos", "q", 0, "quality of service: 0, 1 or 2")
	fl.BoolVarP(&f.retain, "retain", "r", false, "retain the message")
	f.clientFlags.register(fl, "pub")
	return cmd
}

func runPub(cmd *cobra.Command, f *pubFlags) error {
	if f.topic == "" {
		return errors.New("-t topic is required")
	}
	if err := topics.ValidateName(f.topic); err != nil {
		return fmt.Errorf("-t %q: %w", f.topic, err)
	}
	if f.qos < 0 || f.qos > 2 {
		return fmt.Errorf("-q %d: want 0, 1 or 2", f.qos)
	}
	given := 0
	for _, set := range []bool{cmd.Flags().Changed("message"), f.file != "", f.stdin, f.lines, f.null} {
		if set {
			given++
		}
	}
	if given != 1 {
		return errors.New("give the message with exactly one of -m, -f, -s, -l or -n")
	}
	var payload []byte
	switch {
	case cmd.Flags().Changed("message"):
		payload = []byte(f.message)
	case f.file != "":
		b, err := os.ReadFile(f.file)
		if err != nil {
			return fmt.Errorf("-f: %w", err)
		}
		payload = b
	case f.stdin:
		b, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return fmt.Errorf("reading standard input: %w", err)
		}
		payload = b
	}

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f.debugOut = cmd.ErrOrStderr()
	c, err := f.connect(ctx, "pub", func(message) {})
	if err != nil {
		return err
	}
	defer c.disconnect()
	if !f.lines {
		return c.publish(ctx, f.topic, payload, byte(f.qos), f.retain)
	}
	sc := bufio.NewScanner(cmd.InOrStdin())
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	for sc.Scan() {
		if err := c.publish(ctx, f.topic, bytes.Clone(sc.Bytes()), byte(f.qos), f.retain); err != nil {
			return err
		}
	}
	return sc.Err()
}
