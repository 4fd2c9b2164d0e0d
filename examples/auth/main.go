// Command auth runs a broker with a custom hook that authenticates clients
// against a fixed user table and lets each user publish only below its own
// topic prefix, users/<name>/.
package main

import (
	"crypto/subtle"
	"log"
	"os"
	"os/signal"
	"strings"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
)

// userHook is an Authenticator and an Authorizer.
type userHook struct {
	users map[string]string // user name -> password
}

func (h *userHook) ID() string { return "users" }

// Authenticate allows a client whose password matches; it denies everyone
// else, including anonymous clients.
func (h *userHook) Authenticate(c *tern.Client, pk *packets.Connect) tern.Decision {
	want, ok := h.users[pk.Username]
	if !ok || subtle.ConstantTimeCompare([]byte(want), pk.Password) != 1 {
		return tern.Deny
	}
	return tern.Allow
}

// Authorize lets a user write only under users/<name>/ and read anything
// (subscribe: Read, and be sent messages: Deliver).
func (h *userHook) Authorize(c *tern.Client, topic string, access tern.Access) tern.Decision {
	if c.IsInline() {
		return tern.Abstain // the embedding program's own messages
	}
	if access != tern.Write || strings.HasPrefix(topic, "users/"+c.Username()+"/") {
		return tern.Allow
	}
	return tern.Deny
}

func main() {
	srv, err := tern.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.AddHook(&userHook{users: map[string]string{"alice": "wonderland", "bob": "builder"}}); err != nil {
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
