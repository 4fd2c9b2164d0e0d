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

// traceOutput is how a trace's events are written.
type traceOutput struct {
	event func(trace.Event) error
	tick  func(dropped int64) error // each second
	end   func()                    // the duration passed
}

// streamTrace sends the trace's events as Server-Sent Events: "trace"
// events, a "status" event with the count of events dropped when it
// changes (else a ping) each second, and "end" when the duration passed.
func streamTrace(w http.ResponseWriter, r *http.Request, tr *trace.Trace, d time.Duration, closing <-chan struct{}) {
	es := startEvents(w)
	reported := int64(-1)
	follow(r, tr, d, closing, traceOutput{
		event: func(ev trace.Event) error {
			b, _ := json.Marshal(ev)
			return es.send("trace", b)
		},
		tick: func(n int64) error {
			if n == reported {
				return es.ping()
			}
			reported = n
			return es.send("status", fmt.Appendf(nil, `{"dropped":%d}`, n))
		},
		end: func() { es.send("end", []byte(`{"reason":"duration"}`)) },
	})
}

// streamJSONL sends the trace's events as JSON lines.
func streamJSONL(w http.ResponseWriter, r *http.Request, tr *trace.Trace, d time.Duration, closing <-chan struct{}) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	rc := startStream(w)
	enc := json.NewEncoder(w)
	follow(r, tr, d, closing, traceOutput{
		event: func(ev trace.Event) error {
			rc.SetWriteDeadline(time.Now().Add(streamWriteWait))
			if err := enc.Encode(ev); err != nil {
				return err
			}
			return rc.Flush()
		},
		tick: func(int64) error { return nil },
		end:  func() {},
	})
}

// follow writes the trace's events to out until the request ends, the
// admin server shuts down, the duration passes or a write fails.
func follow(r *http.Request, tr *trace.Trace, d time.Duration, closing <-chan struct{}, out traceOutput) {
	end := time.NewTimer(d)
	defer end.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-closing:
			return
		case <-end.C:
			out.end()
			return
		case ev := <-tr.Events():
			if out.event(ev) != nil {
				return
			}
		case <-tick.C:
			if out.tick(tr.Dropped()) != nil {
				return
			}
		}
	}
}
