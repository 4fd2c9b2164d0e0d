package admin

import (
	"compress/gzip"
	"net/http"
	"time"

	"github.com/ternmq/tern/admin/ui"
)

// eventStream writes Server-Sent Events (text/event-stream) to a client
// that reads them as they come.
type eventStream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// streamWriteWait is how long writing one event may take: a reader that
// takes nothing for that long is dropped.
const streamWriteWait = 30 * time.Second

// startEvents answers the request with an event stream. The stream
// outlives the HTTP server's timeouts: each event has its own write
// deadline (see startStream).
func startEvents(w http.ResponseWriter) *eventStream {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // nginx and the like: do not buffer
	return &eventStream{w: w, rc: startStream(w)}
}

// startStream sends the headers of an answer that goes on for as long as
// the request is open, past the server's WriteTimeout: the caller moves
// the write deadline on before each write. (The server's ReadTimeout does
// not end it: net/http lifts the read deadline while a handler runs.)
func startStream(w http.ResponseWriter) *http.ResponseController {
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(streamWriteWait))
	w.WriteHeader(http.StatusOK)
	rc.Flush()
	return rc
}

// send writes one event; data must be one line (JSON is).
func (es *eventStream) send(event string, data []byte) error {
	es.rc.SetWriteDeadline(time.Now().Add(streamWriteWait))
	if _, err := es.w.Write([]byte("event: " + event + "\ndata: ")); err != nil {
		return err
	}
	if _, err := es.w.Write(data); err != nil {
		return err
	}
	if _, err := es.w.Write([]byte("\n\n")); err != nil {
		return err
	}
	return es.rc.Flush()
}

// ping writes a comment, so that proxies and the reader see the stream
// alive while no event comes.
func (es *eventStream) ping() error {
	es.rc.SetWriteDeadline(time.Now().Add(streamWriteWait))
	if _, err := es.w.Write([]byte(": ping\n\n")); err != nil {
		return err
	}
	return es.rc.Flush()
}

// writeBody writes a large answer, compressed when the client accepts
// gzip.
func writeBody(w http.ResponseWriter, r *http.Request, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Add("Vary", "Accept-Encoding")
	if len(body) < 1024 || !ui.AcceptsGzip(r.Header.Get("Accept-Encoding")) {
		w.Write(body)
		return
	}
	h.Set("Content-Encoding", "gzip")
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	gz.Write(body)
	gz.Close()
}
