// Command webhooksink receives Tern's webhook batches and prints each event
// as a line of JSON, or with -quiet only counts them (for load tests):
//
//	go run ./examples/webhooksink -listen 127.0.0.1:18999
//	tern serve --webhook http://127.0.0.1:18999/
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18999", "address to listen on")
	quiet := flag.Bool("quiet", false, "discard the events, print the count every 10 s")
	flag.Parse()
	var bytes atomic.Int64
	if *quiet {
		go func() {
			for range time.Tick(10 * time.Second) {
				log.Printf("%d bytes received", bytes.Load())
			}
		}()
	}
	enc := json.NewEncoder(os.Stdout)
	log.Fatal(http.ListenAndServe(*listen, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if *quiet {
			n, _ := io.Copy(io.Discard, r.Body)
			bytes.Add(n)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		var batch []json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, e := range batch {
			enc.Encode(e)
		}
		w.WriteHeader(http.StatusNoContent)
	})))
}
