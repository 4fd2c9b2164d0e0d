package admin

// The broker's recent history and its live stream, for the dashboard's
// overview:
//
//	GET /api/v1/metrics/history?range=15m  the series of the last 15m (up to 24h)
//	GET /api/v1/metrics/stream              Server-Sent Events: a "sample" each second
//
// The Observer samples the broker once a second while it runs (it is a
// tern.Starter and tern.Stopper): rates of the counters, levels of the
// gauges, kept by package history and sent to every open stream. The
// stream's samples carry the overview's cards (the /api/v1/stats answer)
// too, so an open overview needs nothing else. Streams are bounded
// (MaxMetricStreams); a reader that falls behind misses samples, counted
// in tern_admin_stream_events_dropped_total.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin/history"
)

// MaxMetricStreams bounds the /api/v1/metrics/stream requests open at once;
// more are refused with 429.
const MaxMetricStreams = 32

// historySeries are the series the Observer records, in order. Counters
// become rates per second.
var historySeries = func() []history.Series {
	s := []history.Series{
		{Name: "messages_received", Counter: true},
		{Name: "messages_sent", Counter: true},
		{Name: "bytes_received", Counter: true},
		{Name: "bytes_sent", Counter: true},
		{Name: "connections", Counter: true},    // connections accepted
		{Name: "disconnections", Counter: true}, // established connections ended
		{Name: "messages_dropped", Counter: true},
	}
	for _, r := range tern.DropReasons {
		s = append(s, history.Series{Name: "dropped_" + string(r), Counter: true})
	}
	return append(s,
		history.Series{Name: "clients_connected"},
		history.Series{Name: "queued_messages"},
		history.Series{Name: "inflight_messages"},
		history.Series{Name: "message_memory_bytes"},
	)
}()

// historyValues returns the values of historySeries in st.
func (o *Observer) historyValues(st *Stats) []int64 {
	var disc int64
	for _, d := range snapshot(&o.disconnects) {
		disc += d.value
	}
	v := []int64{st.MessagesReceived, st.MessagesSent, st.BytesReceived, st.BytesSent, st.ConnectionsAccepted, disc,
		st.MessagesDropped}
	for _, r := range tern.DropReasons {
		v = append(v, st.DroppedByReason[string(r)])
	}
	return append(v, st.ClientsConnected, st.Queued, st.Inflight, st.MessageMemory)
}

// sampler is the Observer's part that samples the broker each second.
type sampler struct {
	hist *history.History
	hub  hub
	stop chan struct{}
	done chan struct{}
	last atomic.Pointer[[]byte] // the last sample event, for a stream that opens
}

// Start implements tern.Starter: the Observer samples the broker each
// second until Stop.
func (o *Observer) Start(s *tern.Server) error {
	o.live.stop, o.live.done = make(chan struct{}), make(chan struct{})
	go o.sample(s)
	return nil
}

// Stop implements tern.Stopper.
func (o *Observer) Stop(ctx context.Context) error {
	if o.live.stop == nil {
		return nil
	}
	close(o.live.stop)
	select {
	case <-o.live.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (o *Observer) sample(s *tern.Server) {
	defer close(o.live.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	o.sampleOnce(s, time.Now())
	for {
		select {
		case <-o.live.stop:
			o.live.hub.closeAll()
			return
		case now := <-tick.C:
			o.sampleOnce(s, now)
		}
	}
}

// sampleOnce records one point and sends it to the streams.
func (o *Observer) sampleOnce(s *tern.Server, now time.Time) {
	st := statsOf(s)
	fine, coarse, ok := o.live.hist.Record(now, o.historyValues(&st))
	var b bytes.Buffer
	b.WriteString(`{"time":`)
	b.WriteString(strconv.FormatInt(fine.Time, 10))
	b.WriteString(`,"values":`)
	writePoint(&b, fine.Values)
	if ok {
		b.WriteString(`,"coarse":{"time":`)
		b.WriteString(strconv.FormatInt(coarse.Time, 10))
		b.WriteString(`,"values":`)
		writePoint(&b, coarse.Values)
		b.WriteByte('}')
	}
	b.WriteString(`,"stats":`)
	js, _ := json.Marshal(st)
	b.Write(js)
	b.WriteByte('}')
	ev := b.Bytes()
	o.live.last.Store(&ev)
	o.live.hub.publish(ev)
}

// writePoint writes {"series": value, ...}, null for NaN.
func writePoint(b *bytes.Buffer, vals []float32) {
	b.WriteByte('{')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(historySeries[i].Name)
		b.WriteString(`":`)
		writeFloat(b, v)
	}
	b.WriteByte('}')
}

func writeFloat(b *bytes.Buffer, v float32) {
	if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
		b.WriteString("null")
		return
	}
	b.Write(strconv.AppendFloat(b.AvailableBuffer(), float64(v), 'f', -1, 32))
}

// maxHistoryRange is the longest range history serves.
const maxHistoryRange = time.Duration(history.CoarsePoints) * history.CoarseStep

func (a *Server) metricsHistory(w http.ResponseWriter, r *http.Request) {
	o := a.opts.Observer
	if o == nil {
		writeError(w, http.StatusNotFound, "no history: the admin Observer is not added to the broker")
		return
	}
	d := 15 * time.Minute
	if s := r.URL.Query().Get("range"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 || d > maxHistoryRange {
			writeError(w, http.StatusBadRequest, "range: a duration from 1s to 24h, such as 15m, 1h or 24h")
			return
		}
	}
	win := o.live.hist.Last(d, time.Now())
	var b bytes.Buffer
	b.Grow(64 + len(win.Times)*(12+len(historySeries)*6))
	b.WriteString(`{"step":`)
	b.WriteString(strconv.Itoa(int(win.Step / time.Second)))
	b.WriteString(`,"time":[`)
	for i, t := range win.Times {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(t, 10))
	}
	b.WriteString(`],"series":{`)
	for s, vals := range win.Values {
		if s > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + historySeries[s].Name + `":[`)
		for i, v := range vals {
			if i > 0 {
				b.WriteByte(',')
			}
			writeFloat(&b, v)
		}
		b.WriteByte(']')
	}
	b.WriteString("}}\n")
	writeBody(w, r, "application/json", b.Bytes())
}

func (a *Server) metricsStream(w http.ResponseWriter, r *http.Request) {
	o := a.opts.Observer
	if o == nil {
		writeError(w, http.StatusNotFound, "no stream: the admin Observer is not added to the broker")
		return
	}
	sub, err := o.live.hub.subscribe()
	if err != nil {
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusTooManyRequests, err.Error())
		return
	}
	defer o.live.hub.unsubscribe(sub)
	es := startEvents(w)
	if last := o.live.last.Load(); last != nil {
		if es.send("sample", *last) != nil {
			return
		}
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-a.closing:
			return
		case ev, ok := <-sub.ch:
			if !ok {
				return // the broker stopped
			}
			if es.send("sample", ev) != nil {
				return
			}
		}
	}
}

// hub sends each sample to the open streams, never waiting for one.
type hub struct {
	mu      sync.Mutex
	subs    map[*hubSub]struct{}
	closed  bool
	refused atomic.Int64
	dropped atomic.Int64
}

type hubSub struct{ ch chan []byte }

var errTooManyStreams = errors.New("too many metric streams open (" + strconv.Itoa(MaxMetricStreams) + "); close one")

func (h *hub) subscribe() (*hubSub, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) >= MaxMetricStreams {
		h.refused.Add(1)
		return nil, errTooManyStreams
	}
	if h.subs == nil {
		h.subs = make(map[*hubSub]struct{})
	}
	s := &hubSub{ch: make(chan []byte, 4)}
	if h.closed {
		close(s.ch)
	}
	h.subs[s] = struct{}{}
	return s, nil
}

func (h *hub) unsubscribe(s *hubSub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

func (h *hub) open() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func (h *hub) publish(ev []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.ch <- ev:
		default:
			h.dropped.Add(1)
		}
	}
}

// closeAll ends every stream: the broker stopped.
func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		close(s.ch)
	}
	h.subs = nil
}
