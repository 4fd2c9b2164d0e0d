// Command bridge runs a Tern broker on 127.0.0.1:1884 that bridges to the
// broker at 127.0.0.1:1883 (Tern, Mosquitto, any MQTT server): what is
// published here under sensors/ goes there under site1/sensors/, and what
// is published there under site1/cmd/ comes here under cmd/. Messages
// waiting for the remote are kept in a store in ./bridge-data, so they
// survive a restart of this program.
package main

import (
	"context"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/bridge"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/storage/pebblestore"
)

func main() {
	store, err := pebblestore.Open("bridge-data", pebblestore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	srv, err := tern.New(&tern.Options{Store: store, NodeID: "site1"})
	if err != nil {
		log.Fatal(err)
	}
	bridges, err := bridge.NewManager(slog.Default(), bridge.Config{
		Name:      "upstream",
		Addresses: []string{"127.0.0.1:1883"},
		Topics: []bridge.Topic{
			{Pattern: "sensors/#", Direction: bridge.Out, QoS: 1, RemotePrefix: "site1/"},
			{Pattern: "cmd/#", Direction: bridge.In, QoS: 1, RemotePrefix: "site1/"},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.AddHook(bridges); err != nil { // before Serve
		log.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCP("tcp", "127.0.0.1:1884")); err != nil {
		log.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	for {
		select {
		case <-sig:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			srv.Shutdown(ctx) // stops the bridge first: what is in flight stays queued
			cancel()
			return
		case <-time.After(10 * time.Second):
			for _, st := range bridges.Status() {
				log.Printf("bridge %s: %s %s, queued %d, sent %d, received %d", st.Name, st.State, st.Address,
					st.Queued, st.Sent, st.Received)
			}
		}
	}
}
