// Command httpauthservice is the smallest HTTP auth service for Tern's
// auth.http (and EMQX's HTTP authentication): users in a map, each allowed
// to publish and subscribe under devices/<its client id>/ and nowhere else.
// Run it, then
//
//	tern serve --http-auth-authn-url http://127.0.0.1:8991/mqtt/auth
package main

import (
	"encoding/json"
	"log"
	"net/http"
)

var users = map[string]string{"alice": "s3cret"} // your user store

func main() {
	http.HandleFunc("POST /mqtt/auth", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ ClientID, Username, Password string } // also peerhost, listener, cert_cn, ...
		if json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest) // a 4xx: Tern asks the next authenticator
			return
		}
		result := "deny"
		if pw, ok := users[req.Username]; ok && pw == req.Password {
			result = "allow"
		}
		json.NewEncoder(w).Encode(map[string]any{"result": result, "is_superuser": false,
			"acl": []map[string]string{{"permission": "allow", "action": "all", "topic": "devices/${clientid}/#"},
				{"permission": "deny", "action": "all", "topic": "#"}}}) // no match would leave it to the next authorizer
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:8991", nil))
}
