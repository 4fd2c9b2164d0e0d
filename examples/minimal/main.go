// Command minimal runs a Tern broker on 127.0.0.1:1883 with default options
// until interrupted.
package main

import (
	"log"
	"os"
	"os/signal"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
)

func main() {
	srv, err := tern.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCP("tcp", "127.0.0.1:1883")); err != nil {
		log.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	srv.Close()
}
