package storetest

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
)

// InboundID is one inbound QoS 2 packet id.
type InboundID struct {
	ClientID string
	PacketID uint16
}

// Inbound is one inbound QoS 2 packet id and its message's creation
// time, as a Recorder keeps it.
type Inbound struct {
	InboundID
	Created int64
}

// RetainedTopic is one retained topic, as a Recorder keeps it.
type RetainedTopic struct {
	Topic     string
	MessageID uint64
}

// Recorder is a [storage.Loader] that keeps everything it is given, in
// the order it came. Kinds lists the kind of every call ("message",
// "session", ...). If Fail is set, the first call returns it.
type Recorder struct {
	Messages       []storage.Message
	Sessions       []storage.Session
	Subscriptions  []storage.Subscription
	Deliveries     []storage.Delivery
	InboundIDs     []Inbound
	RetainedTopics []RetainedTopic
	Wills          []storage.Will
	Kinds          []string
	Fail           error
}

var _ storage.Loader = (*Recorder)(nil)

func (r *Recorder) call(kind string) error {
	r.Kinds = append(r.Kinds, kind)
	return r.Fail
}

// Message implements [storage.Loader].
func (r *Recorder) Message(m *storage.Message) error {
	r.Messages = append(r.Messages, *m)
	return r.call("message")
}

// Session implements [storage.Loader].
func (r *Recorder) Session(s *storage.Session) error {
	r.Sessions = append(r.Sessions, *s)
	return r.call("session")
}

// Subscription implements [storage.Loader].
func (r *Recorder) Subscription(s *storage.Subscription) error {
	r.Subscriptions = append(r.Subscriptions, *s)
	return r.call("subscription")
}

// Delivery implements [storage.Loader].
func (r *Recorder) Delivery(d *storage.Delivery) error {
	r.Deliveries = append(r.Deliveries, *d)
	return r.call("delivery")
}

// Inbound implements [storage.Loader].
func (r *Recorder) Inbound(clientID string, packetID uint16, created int64) error {
	r.InboundIDs = append(r.InboundIDs, Inbound{InboundID{clientID, packetID}, created})
	return r.call("inbound")
}

// Retained implements [storage.Loader].
func (r *Recorder) Retained(topic string, messageID uint64) error {
	r.RetainedTopics = append(r.RetainedTopics, RetainedTopic{topic, messageID})
	return r.call("retained")
}

// Will implements [storage.Loader].
func (r *Recorder) Will(w *storage.Will) error {
	r.Wills = append(r.Wills, *w)
	return r.call("will")
}

type (
	subKey struct{ client, group, filter string }
	dlvKey struct {
		client string
		seq    uint64
	}
)

// state is a store's content as sets, for comparing a store with the
// model regardless of order.
type state struct {
	Messages      map[uint64]storage.Message
	Sessions      map[string]storage.Session
	Subscriptions map[subKey]storage.Subscription
	Deliveries    map[dlvKey]storage.Delivery
	Inbound       map[InboundID]int64 // creation times
	Retained      map[string]uint64
	Wills         map[string]storage.Will
}

func newState() *state {
	return &state{
		Messages:      map[uint64]storage.Message{},
		Sessions:      map[string]storage.Session{},
		Subscriptions: map[subKey]storage.Subscription{},
		Deliveries:    map[dlvKey]storage.Delivery{},
		Inbound:       map[InboundID]int64{},
		Retained:      map[string]uint64{},
		Wills:         map[string]storage.Will{},
	}
}

// stateOf turns what a Recorder got into a state, failing on duplicates.
func stateOf(r *Recorder) (*state, error) {
	s := newState()
	dup := func(what string, k any) error { return fmt.Errorf("%s %v loaded twice", what, k) }
	for _, m := range r.Messages {
		if _, ok := s.Messages[m.ID]; ok {
			return nil, dup("message", m.ID)
		}
		s.Messages[m.ID] = normMessage(m)
	}
	for _, x := range r.Sessions {
		if _, ok := s.Sessions[x.ClientID]; ok {
			return nil, dup("session", x.ClientID)
		}
		s.Sessions[x.ClientID] = x
	}
	for _, x := range r.Subscriptions {
		k := subKey{x.ClientID, x.Group, x.Filter}
		if _, ok := s.Subscriptions[k]; ok {
			return nil, dup("subscription", k)
		}
		s.Subscriptions[k] = x
	}
	for _, x := range r.Deliveries {
		k := dlvKey{x.ClientID, x.Seq}
		if _, ok := s.Deliveries[k]; ok {
			return nil, dup("delivery", k)
		}
		s.Deliveries[k] = normDelivery(x)
	}
	for _, x := range r.InboundIDs {
		if _, ok := s.Inbound[x.InboundID]; ok {
			return nil, dup("inbound", x.InboundID)
		}
		s.Inbound[x.InboundID] = x.Created
	}
	for _, x := range r.RetainedTopics {
		if _, ok := s.Retained[x.Topic]; ok {
			return nil, dup("retained", x.Topic)
		}
		s.Retained[x.Topic] = x.MessageID
	}
	for _, x := range r.Wills {
		if _, ok := s.Wills[x.ClientID]; ok {
			return nil, dup("will", x.ClientID)
		}
		x.Message = normMessage(x.Message)
		s.Wills[x.ClientID] = x
	}
	return s, nil
}

// normMessage makes the copy a store would give back: empty slices as
// nil, only the forwarded properties.
func normMessage(m storage.Message) storage.Message {
	if len(m.Payload) == 0 {
		m.Payload = nil
	} else {
		m.Payload = slices.Clone(m.Payload)
	}
	if p := m.Properties; p != nil {
		q := &packets.Properties{
			PayloadFormat: p.PayloadFormat,
			MessageExpiry: p.MessageExpiry,
			ContentType:   p.ContentType,
			ResponseTopic: p.ResponseTopic,
		}
		if p.CorrelationData != nil {
			q.CorrelationData = append([]byte{}, p.CorrelationData...)
		}
		if len(p.User) > 0 {
			q.User = slices.Clone(p.User)
		}
		m.Properties = q
	}
	return m
}

func normDelivery(d storage.Delivery) storage.Delivery {
	if len(d.SubIDs) == 0 {
		d.SubIDs = nil
	} else {
		d.SubIDs = slices.Clone(d.SubIDs)
	}
	return d
}

// diff describes how got differs from want, or returns "".
func diff(want, got *state) string {
	var out []string
	report := func(kind string, w, g any) {
		wv, gv := reflect.ValueOf(w), reflect.ValueOf(g)
		var lines []string
		for _, k := range wv.MapKeys() {
			gx := gv.MapIndex(k)
			switch {
			case !gx.IsValid():
				lines = append(lines, fmt.Sprintf("%s %#v: missing", kind, k.Interface()))
			case !reflect.DeepEqual(wv.MapIndex(k).Interface(), gx.Interface()):
				lines = append(lines, fmt.Sprintf("%s %#v:\n\tgot  %+v\n\twant %+v", kind, k.Interface(), gx, wv.MapIndex(k)))
			}
		}
		for _, k := range gv.MapKeys() {
			if !wv.MapIndex(k).IsValid() {
				lines = append(lines, fmt.Sprintf("%s %#v: unexpected %+v", kind, k.Interface(), gv.MapIndex(k)))
			}
		}
		sort.Strings(lines)
		if len(lines) > 10 {
			lines = append(lines[:10], fmt.Sprintf("... and %d more", len(lines)-10))
		}
		out = append(out, lines...)
	}
	report("message", want.Messages, got.Messages)
	report("session", want.Sessions, got.Sessions)
	report("subscription", want.Subscriptions, got.Subscriptions)
	report("delivery", want.Deliveries, got.Deliveries)
	report("inbound", want.Inbound, got.Inbound)
	report("retained", want.Retained, got.Retained)
	report("will", want.Wills, got.Wills)
	if len(out) == 0 {
		return ""
	}
	return fmt.Sprint(len(out), " differences:\n", strings.Join(out, "\n"))
}

// model is a reference store: a Batch that applies each change to a state
// at once. Tests make the same changes to a model and to the store under
// test and compare.
type model struct {
	s *state
	n int
}

var _ storage.Batch = (*model)(nil)

func newModel() *model { return &model{s: newState()} }

func (m *model) PutMessage(x *storage.Message) { m.n++; m.s.Messages[x.ID] = normMessage(*x) }
func (m *model) DeleteMessage(id uint64)       { m.n++; delete(m.s.Messages, id) }
func (m *model) PutSession(x *storage.Session) { m.n++; m.s.Sessions[x.ClientID] = *x }

func (m *model) DeleteSession(id string) {
	m.n++
	delete(m.s.Sessions, id)
	delete(m.s.Wills, id)
	for k := range m.s.Subscriptions {
		if k.client == id {
			delete(m.s.Subscriptions, k)
		}
	}
	for k := range m.s.Deliveries {
		if k.client == id {
			delete(m.s.Deliveries, k)
		}
	}
	for k := range m.s.Inbound {
		if k.ClientID == id {
			delete(m.s.Inbound, k)
		}
	}
}

func (m *model) PutSubscription(x *storage.Subscription) {
	m.n++
	m.s.Subscriptions[subKey{x.ClientID, x.Group, x.Filter}] = *x
}

func (m *model) DeleteSubscription(client, group, filter string) {
	m.n++
	delete(m.s.Subscriptions, subKey{client, group, filter})
}

func (m *model) PutDelivery(x *storage.Delivery) {
	m.n++
	m.s.Deliveries[dlvKey{x.ClientID, x.Seq}] = normDelivery(*x)
}

func (m *model) DeleteDelivery(client string, seq uint64) {
	m.n++
	delete(m.s.Deliveries, dlvKey{client, seq})
}

func (m *model) PutInbound(client string, pid uint16, created int64) {
	m.n++
	m.s.Inbound[InboundID{client, pid}] = created
}
func (m *model) DeleteInbound(client string, pid uint16) {
	m.n++
	delete(m.s.Inbound, InboundID{client, pid})
}
func (m *model) PutRetained(topic string, id uint64) { m.n++; m.s.Retained[topic] = id }
func (m *model) DeleteRetained(topic string)         { m.n++; delete(m.s.Retained, topic) }

func (m *model) PutWill(x *storage.Will) {
	m.n++
	w := *x
	w.Message = normMessage(w.Message)
	m.s.Wills[x.ClientID] = w
}

func (m *model) DeleteWill(client string) { m.n++; delete(m.s.Wills, client) }
func (m *model) Len() int                 { return m.n }
