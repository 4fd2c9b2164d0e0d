// Command dashboard runs an embedded Tern broker on 127.0.0.1:1883 with
// its admin API and web dashboard on http://127.0.0.1:18083/ until
// interrupted. The admin Observer feeds the overview's charts and the
// trace hook the live trace; both are hooks added before Serve.
package main

import (
	"context"
	"log"
	"net"
	"os"
	"os/signal"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/hooks/trace"
	"github.com/ternmq/tern/listeners"
)

func main() {
	srv, err := tern.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	obs := admin.NewObserver()
	tracer := trace.New(trace.Limits{})
	for _, h := range []tern.Hook{obs, tracer} {
		if err := srv.AddHook(h); err != nil {
			log.Fatal(err)
		}
	}
	if err := srv.AddListener(listeners.NewTCP("tcp", "127.0.0.1:1883")); err != nil {
		log.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		log.Fatal(err)
	}
	// On loopback no credentials are needed; elsewhere set APIKeys or
	// Tokens, which the dashboard's login page asks for.
	adm := admin.New(srv, admin.Options{Observer: obs, Tracer: tracer})
	ln, err := net.Listen("tcp", "127.0.0.1:18083")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		if err := adm.Serve(ln); err != nil {
			log.Fatal(err)
		}
	}()
	log.Print("dashboard on http://127.0.0.1:18083/")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	adm.Shutdown(context.Background())
	srv.Close()
}
