// Package trace is a hook that follows one client, topic filter or network
// address as it happens: connections, subscriptions, publishes, deliveries,
// drops and wills, as events a reader takes from a channel. The admin API
// streams them (GET /api/v1/trace) and the dashboard's live trace shows
// them.
//
// Everything is bounded, so that a trace on "#" of a busy broker cannot
// flood its reader or the broker: at most Limits.MaxTraces traces at once,
// Limits.MaxRate events a second per trace (the rest counted, not sent),
// Limits.Buffer events waiting per trace (the reader that falls behind
// loses the newest, counted), and payload excerpts of at most
// Limits.MaxPayload bytes. With no trace running, the hook costs one
// atomic load per event.
package trace

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/topics"
)

// Limits bound the traces. Zero fields take the defaults.
type Limits struct {
	MaxTraces  int // traces at once; default 10
	MaxRate    int // events a second per trace; default 1000
	Buffer     int // events waiting per trace for its reader; default 1024
	MaxPayload int // bytes of payload an event may carry; default 1024
}

// Default limits.
const (
	DefaultMaxTraces  = 10
	DefaultMaxRate    = 1000
	DefaultBuffer     = 1024
	DefaultMaxPayload = 1024
)

func (l Limits) withDefaults() Limits {
	if l.MaxTraces <= 0 {
		l.MaxTraces = DefaultMaxTraces
	}
	if l.MaxRate <= 0 {
		l.MaxRate = DefaultMaxRate
	}
	if l.Buffer <= 0 {
		l.Buffer = DefaultBuffer
	}
	if l.MaxPayload <= 0 {
		l.MaxPayload = DefaultMaxPayload
	}
	return l
}

// Errors of Follow.
var (
	ErrTooMany = errors.New("trace: too many traces running")
	ErrFilter  = errors.New("trace: invalid filter")
)

// Filter says what a trace follows: exactly one of ClientID, Topic and
// Address.
type Filter struct {
	// ClientID follows one client: its connections, subscriptions and
	// publishes, and the messages delivered to it or dropped for it.
	ClientID string
	// Topic follows a topic filter: the messages whose topic it matches
	// (published, delivered, dropped, wills) and the subscriptions to
	// filters it matches.
	Topic string
	// Address follows the clients connected from an IP address or a CIDR
	// range ("10.0.0.0/8"), as ClientID follows one.
	Address string
	// PayloadBytes is how much of each payload events carry, at most
	// Limits.MaxPayload; 0 carries none.
	PayloadBytes int
}

func (f Filter) validate(l Limits) (netip.Prefix, error) {
	n := 0
	for _, s := range []string{f.ClientID, f.Topic, f.Address} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return netip.Prefix{}, fmt.Errorf("%w: give one of a client id, a topic filter and an address", ErrFilter)
	}
	if f.PayloadBytes < 0 || f.PayloadBytes > l.MaxPayload {
		return netip.Prefix{}, fmt.Errorf("%w: payload bytes %d not from 0 to %d", ErrFilter, f.PayloadBytes, l.MaxPayload)
	}
	if f.Topic != "" {
		if err := topics.ValidateFilter(f.Topic); err != nil {
			return netip.Prefix{}, fmt.Errorf("%w: %v", ErrFilter, err)
		}
		if _, _, shared := topics.ParseShared(f.Topic); shared {
			return netip.Prefix{}, fmt.Errorf("%w: a shared subscription is not a topic filter to trace", ErrFilter)
		}
	}
	if f.Address == "" {
		return netip.Prefix{}, nil
	}
	if a, err := netip.ParseAddr(f.Address); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(f.Address)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %q is neither an IP address nor a CIDR range", ErrFilter, f.Address)
	}
	return p.Masked(), nil
}

// Event is one thing a trace saw.
type Event struct {
	Time time.Time `json:"time"`
	// Type is connect, disconnect, subscribe, unsubscribe, publish,
	// deliver, drop or will.
	Type     string `json:"type"`
	ClientID string `json:"client_id,omitempty"` // who acted, or who a message went to (deliver, drop)
	Username string `json:"username,omitempty"`
	Address  string `json:"address,omitempty"`
	// Topic is the message's topic, or the subscription's filter.
	Topic string `json:"topic,omitempty"`
	Group string `json:"group,omitempty"` // of a shared subscription
	QoS   byte   `json:"qos"`
	// Retain is the message's retain flag.
	Retain bool `json:"retain,omitempty"`
	// From is the publisher of a message delivered or dropped.
	From string `json:"from,omitempty"`
	// Size is the payload's size in bytes.
	Size int `json:"size,omitempty"`
	// Payload is the start of the payload (Filter.PayloadBytes), as text
	// when it is UTF-8 (PayloadEncoding "plain"), else base64.
	Payload         string `json:"payload,omitempty"`
	PayloadEncoding string `json:"payload_encoding,omitempty"`
	Truncated       bool   `json:"truncated,omitempty"`
	// Reason says why a connection ended (disconnect) or a message was
	// dropped (drop); Resumed that a connect took up an existing session.
	Reason  string `json:"reason,omitempty"`
	Resumed bool   `json:"resumed,omitempty"`
}

// Tracer is the hook. Add it to the server before Serve (it implements
// tern.Starter to know its server) and start traces with Follow.
type Tracer struct {
	limits Limits
	srv    atomic.Pointer[tern.Server]

	mu     sync.Mutex               // serialises Start and Stop
	traces atomic.Pointer[[]*Trace] // copy-on-write: the hook reads it without locking

	started, refused, events, overRate, overBuffer atomic.Int64
}

var (
	_ tern.ConnectObserver    = (*Tracer)(nil)
	_ tern.DisconnectObserver = (*Tracer)(nil)
	_ tern.SubscribeObserver  = (*Tracer)(nil)
	_ tern.PublishObserver    = (*Tracer)(nil)
	_ tern.DropObserver       = (*Tracer)(nil)
	_ tern.WillObserver       = (*Tracer)(nil)
	_ tern.Starter            = (*Tracer)(nil)
)

// New returns a Tracer with the limits (zero fields: the defaults).
func New(l Limits) *Tracer { return &Tracer{limits: l.withDefaults()} }

// Limits returns the limits in force.
func (t *Tracer) Limits() Limits { return t.limits }

// Stats are a Tracer's counters.
type Stats struct {
	Active     int   // traces running
	Started    int64 // traces started
	Refused    int64 // traces refused: MaxTraces were running
	Events     int64 // events handed to readers
	OverRate   int64 // events not sent: a trace's MaxRate was reached
	OverBuffer int64 // events not sent: a reader's buffer was full
}

// Stats returns the counters.
func (t *Tracer) Stats() Stats {
	st := Stats{Started: t.started.Load(), Refused: t.refused.Load(), Events: t.events.Load(),
		OverRate: t.overRate.Load(), OverBuffer: t.overBuffer.Load()}
	if ts := t.traces.Load(); ts != nil {
		st.Active = len(*ts)
	}
	return st
}

// ID implements tern.Hook.
func (t *Tracer) ID() string { return "trace" }

// Start implements tern.Starter: it keeps the server, to find the address
// of a client a message is delivered to.
func (t *Tracer) Start(s *tern.Server) error {
	t.srv.Store(s)
	return nil
}

// Trace is one running trace. Read its events from Events until Done is
// closed, and end it with Stop.
type Trace struct {
	t      *Tracer
	filter Filter
	prefix netip.Prefix // Address, parsed
	events chan Event
	done   chan struct{}
	once   sync.Once

	second   atomic.Int64 // the unix second being counted
	inSecond atomic.Int64 // events in it
	dropped  atomic.Int64

	addrMu sync.Mutex
	addrs  map[string]bool // client id -> whether its address is in prefix (Address traces)
}

// maxAddrCache bounds an address trace's memory of which clients are at
// the address; it starts again when full.
const maxAddrCache = 4096

// Follow starts a trace. It fails with ErrFilter for a filter that is
// wrong and ErrTooMany when Limits.MaxTraces are running.
func (t *Tracer) Follow(f Filter) (*Trace, error) {
	p, err := f.validate(t.limits)
	if err != nil {
		return nil, err
	}
	tr := &Trace{t: t, filter: f, prefix: p, events: make(chan Event, t.limits.Buffer), done: make(chan struct{})}
	if f.Address != "" {
		tr.addrs = make(map[string]bool)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var old []*Trace
	if ts := t.traces.Load(); ts != nil {
		old = *ts
	}
	if len(old) >= t.limits.MaxTraces {
		t.refused.Add(1)
		return nil, fmt.Errorf("%w (at most %d)", ErrTooMany, t.limits.MaxTraces)
	}
	next := append(append(make([]*Trace, 0, len(old)+1), old...), tr)
	t.traces.Store(&next)
	t.started.Add(1)
	return tr, nil
}

// Events returns the channel of the trace's events. It is never closed:
// stop reading when Done is closed.
func (tr *Trace) Events() <-chan Event { return tr.events }

// Done is closed when the trace stops.
func (tr *Trace) Done() <-chan struct{} { return tr.done }

// Dropped returns how many events the trace did not send: over the rate,
// or with its buffer full.
func (tr *Trace) Dropped() int64 { return tr.dropped.Load() }

// Filter returns what the trace follows.
func (tr *Trace) Filter() Filter { return tr.filter }

// Stop ends the trace. It may be called more than once.
func (tr *Trace) Stop() {
	tr.once.Do(func() {
		t := tr.t
		t.mu.Lock()
		var next []*Trace
		for _, x := range *t.traces.Load() {
			if x != tr {
				next = append(next, x)
			}
		}
		t.traces.Store(&next)
		t.mu.Unlock()
		close(tr.done)
	})
}

// send hands ev to the reader, within the rate and the buffer.
func (tr *Trace) send(ev Event) {
	now := ev.Time.Unix()
	if sec := tr.second.Load(); sec != now && tr.second.CompareAndSwap(sec, now) {
		tr.inSecond.Store(0)
	}
	if tr.inSecond.Add(1) > int64(tr.t.limits.MaxRate) {
		tr.dropped.Add(1)
		tr.t.overRate.Add(1)
		return
	}
	select {
	case tr.events <- ev:
		tr.t.events.Add(1)
	default:
		tr.dropped.Add(1)
		tr.t.overBuffer.Add(1)
	}
}

// excerpt fills the payload fields of ev with the start of p.
func (tr *Trace) excerpt(ev *Event, p []byte) {
	ev.Size = len(p)
	n := min(tr.filter.PayloadBytes, len(p))
	if n == 0 {
		return
	}
	b := p[:n]
	for i := 0; i < utf8.UTFMax-1 && len(b) > 0 && !utf8.Valid(b); i++ {
		b = b[:len(b)-1] // a character cut in two at the end
	}
	if len(b) > 0 && utf8.Valid(b) {
		ev.Payload, ev.PayloadEncoding = string(b), "plain"
	} else {
		b = p[:n]
		ev.Payload, ev.PayloadEncoding = base64.StdEncoding.EncodeToString(b), "base64"
	}
	ev.Truncated = len(b) < len(p)
}

// clientMatches reports whether a trace of a client id or an address
// follows the client.
func (tr *Trace) clientMatches(c *tern.Client) bool {
	switch {
	case tr.filter.ClientID != "":
		return c.ID() == tr.filter.ClientID
	case tr.filter.Address != "":
		return tr.addrMatches(c.RemoteAddr())
	}
	return false
}

// addrMatches reports whether a "host:port" address is in the trace's
// range.
func (tr *Trace) addrMatches(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, err := netip.ParseAddr(host)
	return err == nil && tr.prefix.Contains(a.Unmap())
}

// idMatches reports whether a trace of a client id or an address follows
// the client with the id (a message's recipient), looking the address up
// once per client.
func (tr *Trace) idMatches(id string) bool {
	switch {
	case tr.filter.ClientID != "":
		return id == tr.filter.ClientID
	case tr.filter.Address == "" || id == "":
		return false
	}
	tr.addrMu.Lock()
	defer tr.addrMu.Unlock()
	if in, ok := tr.addrs[id]; ok {
		return in
	}
	in := false
	if s := tr.t.srv.Load(); s != nil {
		if sum, ok := s.SessionSummary(id); ok {
			in = tr.addrMatches(sum.RemoteAddr())
		}
	}
	tr.rememberLocked(id, in)
	return in
}

func (tr *Trace) remember(id string, in bool) {
	tr.addrMu.Lock()
	tr.rememberLocked(id, in)
	tr.addrMu.Unlock()
}

func (tr *Trace) rememberLocked(id string, in bool) {
	if len(tr.addrs) >= maxAddrCache {
		clear(tr.addrs)
	}
	tr.addrs[id] = in
}

// topicMatches reports whether a topic trace follows messages on topic.
func (tr *Trace) topicMatches(topic string) bool {
	return tr.filter.Topic != "" && topics.Match(tr.filter.Topic, topic)
}
