package tern_test

import (
	"fmt"

	"github.com/ternmq/tern"
)

// The in-process client publishes and subscribes without a network
// connection, under the same rules and hooks as network clients.
func ExampleServer_Subscribe() {
	srv, _ := tern.New(&tern.Options{SysInterval: -1})
	srv.Serve()
	defer srv.Close()

	got := make(chan string, 1)
	srv.Subscribe("greetings/#", 1, func(m *tern.Message) {
		got <- fmt.Sprintf("%s: %s", m.Topic, m.Payload)
	})
	srv.Publish("greetings/world", []byte("hello"), false, 0)
	fmt.Println(<-got)
	// Output: greetings/world: hello
}
