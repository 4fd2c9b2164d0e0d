package tern_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage/pebblestore"
	"github.com/ternmq/tern/topics"
)

// accessHook is an Authenticator and an Authorizer: user "a" (password
// "b") may connect, and may publish only below "a/".
type accessHook struct{}

var (
	_ tern.Authenticator = accessHook{} // a mistyped method fails here, not silently
	_ tern.Authorizer    = accessHook{}
)

func (accessHook) ID() string { return "access" }

func (accessHook) Authenticate(c *tern.Client, pk *packets.Connect) tern.Decision {
	if pk.Username == "a" && string(pk.Password) == "b" {
		return tern.Allow
	}
	return tern.Deny
}

func (accessHook) Authorize(c *tern.Client, topic string, access tern.Access) tern.Decision {
	switch {
	case c.IsInline():
		return tern.Abstain // the program's own messages
	case access == tern.Write && !topics.Match("a/#", topic):
		return tern.Deny
	}
	return tern.Abstain
}

// A complete embedded broker: a store, TCP and WebSocket listeners, an
// authentication and authorization hook, the in-process client, and a
// graceful shutdown on SIGINT, in the order that keeps the store safe
// (open, New, Serve, ... Shutdown, close).
func Example() {
	dir, _ := os.MkdirTemp("", "tern-example")
	defer os.RemoveAll(dir)
	store, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close() // after Shutdown: deferred calls run last in, first out

	srv, err := tern.New(&tern.Options{Store: store, SysInterval: -1})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.AddHook(accessHook{}); err != nil {
		log.Fatal(err)
	}
	tcp := listeners.NewTCP("tcp", "127.0.0.1:0") // port 0: any free port
	ws := listeners.NewWebSocket("ws", "127.0.0.1:0")
	for _, l := range []tern.Listener{tcp, ws} {
		if err := srv.AddListener(l); err != nil {
			log.Fatal(err)
		}
	}
	if err := srv.Serve(); err != nil { // binds the listeners, then returns
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()

	got := make(chan string, 1)
	if err := srv.Subscribe("a/#", 1, func(m *tern.Message) { got <- fmt.Sprintf("%s %s", m.Topic, m.Payload) }); err != nil {
		log.Fatal(err)
	}

	// A network client, user "a".
	opts := paho.NewClientOptions().AddBroker("tcp://" + tcp.Addr().String()).SetClientID("device").
		SetUsername("a").SetPassword("b")
	client := paho.NewClient(opts)
	if tok := client.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		log.Fatal(tok.Error())
	}
	defer client.Disconnect(0)
	client.Publish("a/temperature", 1, false, "21.5").Wait()

	select {
	case m := <-got:
		fmt.Println(m)
	case <-ctx.Done(): // SIGINT
	}
	// Output: a/temperature 21.5
}
