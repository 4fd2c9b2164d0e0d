package events

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// BenchmarkPublishPath measures the broker's publish path without and with
// a webhook sending a message.publish event for every message: a client
// publishing QoS 0 messages of 64 bytes over TCP as fast as the broker
// reads them (no subscribers: the cheapest publish path there is, so the
// webhook's share is the largest), and the in-process client's Publish.
// "webhook" has the default settings (a full queue drops, reported as
// dropped/op); "webhook-bigqueue" a queue of a million events, so every
// event is sent. The endpoint reads and discards; TERN_WEBHOOK_SINK puts
// it in another process (go run ./examples/webhooksink -quiet). The
// ratios are in BENCHMARKS.md, with an end-to-end comparison.
//
//	go test -run '^$' -bench PublishPath -count 5 ./hooks/events
func BenchmarkPublishPath(b *testing.B) {
	sinkURL := os.Getenv("TERN_WEBHOOK_SINK") // an endpoint in another process, if given
	if sinkURL == "" {
		sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(204)
		}))
		defer sink.Close()
		sinkURL = sink.URL
	}
	payload := make([]byte, 64)
	for _, mode := range []string{"tcp", "inprocess"} {
		for _, variant := range []string{"none", "webhook", "webhook-bigqueue"} {
			hook := variant != "none"
			b.Run(mode+"/"+variant, func(b *testing.B) {
				var hooks []tern.Hook
				var w *Webhook
				if hook {
					w = newWebhook(b, sinkURL, func(o *WebhookOptions) {
						o.Events = []string{MessagePublish}
						o.BatchDelay = 100 * time.Millisecond
						switch variant {
						case "webhook-bigqueue": // nothing dropped: the sender sends every event
							o.QueueSize, o.QueueBytes = 1_000_000, 1<<30
						}
					})
					hooks = w.Hooks()
				}
				srv := server(b, nil, hooks...)
				if mode == "inprocess" {
					b.ReportAllocs()
					b.ResetTimer()
					for b.Loop() {
						srv.Publish("sensors/1/temp", payload, false, 0)
					}
				} else {
					publishTCP(b, srv, payload)
				}
				b.StopTimer()
				if w != nil {
					s := w.Stats()
					b.ReportMetric(float64(s.Dropped[DropQueueFull])/float64(b.N), "dropped/op")
				}
			})
		}
	}
}

// publishTCP publishes b.N QoS 0 messages from one connection and waits
// until the broker has read them all.
func publishTCP(b *testing.B, srv *terntest.Server, payload []byte) {
	nc, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	conn, _ := (&packets.Connect{ProtocolVersion: packets.V311, ClientID: "pub", CleanStart: true}).Encode(nil, packets.V311)
	nc.Write(conn)
	if _, err := packets.ReadPacket(bufio.NewReader(nc), packets.V311, 0); err != nil {
		b.Fatal(err)
	}
	one, _ := (&packets.Publish{Topic: "sensors/1/temp", Payload: payload}).Encode(nil, packets.V311)
	batch := make([]byte, 0, 100*len(one))
	for i := 0; i < 100; i++ {
		batch = append(batch, one...)
	}
	base := srv.Stats().MessagesReceived
	bw := bufio.NewWriterSize(nc, 64<<10)
	b.SetBytes(int64(len(one)))
	b.ResetTimer()
	n := b.N
	for n >= 100 {
		bw.Write(batch)
		n -= 100
	}
	for ; n > 0; n-- {
		bw.Write(one)
	}
	bw.Flush()
	for srv.Stats().MessagesReceived-base < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
}

// BenchmarkObserve is what a message.publish event costs the publishing
// goroutine: the observer's checks and the append to the queue (the
// sender's work is not in it: the benchmark takes batches off the queue
// itself).
//
//	go test -run '^$' -bench Observe -benchmem ./hooks/events
func BenchmarkObserve(b *testing.B) {
	w, err := NewWebhook(WebhookOptions{URL: "http://127.0.0.1:1/", Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	o := pubObserver{w}
	m := &tern.Message{Topic: "sensors/1/temp", Payload: make([]byte, 64), Created: time.Now(), Origin: "pub"}
	var batch []event
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		o.OnPublished(nil, m)
		if i++; i%1000 == 0 {
			batch = w.take(batch[:0], 1000)
		}
	}
	if s := w.Stats(); s.Dropped[DropQueueFull] > 0 {
		b.Fatalf("%d dropped", s.Dropped[DropQueueFull])
	}
}
