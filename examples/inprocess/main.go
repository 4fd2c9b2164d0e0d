// Command inprocess embeds a broker and uses its in-process client: it
// subscribes a handler, publishes to it, and prints what arrives, without
// any network listener.
package main

import (
	"fmt"
	"log"

	"github.com/ternmq/tern"
)

func main() {
	srv, err := tern.New(&tern.Options{SysInterval: -1})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	done := make(chan struct{})
	err = srv.Subscribe("sensors/+/temperature", 1, func(m *tern.Message) {
		fmt.Printf("%s = %s\n", m.Topic, m.Payload)
		close(done)
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Publish("sensors/kitchen/temperature", []byte("21.5"), false, 1); err != nil {
		log.Fatal(err)
	}
	<-done
}
