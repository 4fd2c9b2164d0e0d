package admin

// The live trace (with Options.Tracer):
//
//	GET /api/v1/trace?client_id=sensor-7   or ?topic=t/%23 or ?address=10.0.0.0/8
//
// follows what happens to a client, a topic filter or the clients of an
// address (see package hooks/trace) for as long as the request is open,
// at most duration (default 30m, at most 24h). Events come as
// Server-Sent Events ("trace" events, and a "status" event each second
// with the count of events the trace's limits dropped), or with
// format=jsonl as JSON lines, one event each. payload_bytes (default 0,
// at most 1024) says how much of each payload to show. At most
// trace.Limits.MaxTraces traces run at once: more are refused with 429.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ternmq/tern/hooks/trace"
)

// Durations of a trace.
const (
	defaultTraceDuration = 30 * time.Minute
	maxTraceDuration     = 24 * time.Hour
)

func (a *Server) trace(w http.ResponseWriter, r *http.Request) {
	tracer := a.opts.Tracer
	if tracer == nil {
		writeError(w, http.StatusNotFound, "no trace: the trace hook is not added to the broker")
		return
	}
	q := r.URL.Query()
	f := trace.Filter{ClientID: q.Get("client_id"), Topic: q.Get("topic"), Address: q.Get("address")}
	if s := q.Get("payload_bytes"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, "payload_bytes: not a whole number")
			return
		}
		f.PayloadBytes = n
	}
	d := defaultTraceDuration
	if s := q.Get("duration"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 || d > maxTraceDuration {
			writeError(w, http.StatusBadRequest, "duration: from 1s to 24h, such as 10m")
			return
		}
	}
	jsonl := false
	switch q.Get("format") {
	case "", "sse":
	case "jsonl":
		jsonl = true
	default:
		writeError(w, http.StatusBadRequest, "format: sse or jsonl")
		return
	}
	tr, err := tracer.Follow(f)
	switch {
	case errors.Is(err, trace.ErrTooMany):
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusTooManyRequests, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	defer tr.Stop()
	a.opts.Logger.Info("admin API: trace started", "client_id", f.ClientID, "topic", f.Topic, "address", f.Address,
		"by", caller(r), "remote", r.RemoteAddr)
	if jsonl {
		streamJSONL(w, r, tr, d, a.closing)
		return
	}
	streamTrace(w, r, tr, d, a.closing)
}

// streamTrace sends the trace's events as Server-Sent Events.
func streamTrace(w http.ResponseWriter, r *http.Request, tr *trace.Trace, d time.Duration, closing <-chan struct{}) {
	es := startEvents(w)
	end := time.NewTimer(d)
	defer end.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	reported := int64(-1)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-closing:
			return
		case <-end.C:
			es.send("end", []byte(`{"reason":"duration"}`))
			return
		case ev := <-tr.Events():
			b, _ := json.Marshal(ev)
			if es.send("trace", b) != nil {
				return
			}
		case <-tick.C:
			// The count of dropped events when it changes, else a ping.
			var err error
			if n := tr.Dropped(); n != reported {
				reported = n
				err = es.send("status", fmt.Appendf(nil, `{"dropped":%d}`, n))
			} else {
				err = es.ping()
			}
			if err != nil {
				return
			}
		}
	}
}

// streamJSONL sends the trace's events as JSON lines.
func streamJSONL(w http.ResponseWriter, r *http.Request, tr *trace.Trace, d time.Duration, closing <-chan struct{}) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	rc := startStream(w)
	end := time.NewTimer(d)
	defer end.Stop()
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-closing:
			return
		case <-end.C:
			return
		case ev := <-tr.Events():
			rc.SetWriteDeadline(time.Now().Add(streamWriteWait))
			if enc.Encode(ev) != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
