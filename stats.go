package tern

import "sync/atomic"

// Stats is a snapshot of the server's counters, taken by Server.Stats. They
// feed the $SYS topics and the metrics.
type Stats struct {
	ClientsConnected     int64 // connections with an established session now
	ClientsTotal         int64 // sessions now, online and offline
	ClientsMaximum       int64 // most ClientsConnected seen
	ClientsExpired       int64 // sessions ended by expiry
	Connects             int64 // CONNECTs that established a session
	ConnectionsAccepted  int64 // network connections accepted
	ConnectsRefused      int64 // CONNECTs refused (auth, protocol, ...)
	AuthFailures         int64 // CONNECTs refused by authentication
	ConnectionsRejected  int64 // connections closed at accept: MaxConnections or a listener's limit
	RateLimited          int64 // clients disconnected for MaxPublishRate or MaxPublishBytesRate
	SubscriptionsRefused int64 // filters refused for MaxSubscriptionsPerClient
	ProtocolErrors       int64 // connections closed for a malformed or invalid packet
	MessagesReceived     int64 // PUBLISH packets received, in-process publishes included
	MessagesSent         int64 // PUBLISH packets sent
	MessagesDropped      int64 // messages dropped instead of delivered (see DropObserver): the sum of Dropped over DropReasons
	MessagesExpired      int64 // messages dropped because they expired: Dropped(DropExpired)
	PublishDenied        int64 // PUBLISH refused by an authorizer or interceptor
	DeliveriesDenied     int64 // deliveries to a client skipped because an authorizer denied Deliver access
	BytesReceived        int64 // bytes of MQTT packets received
	BytesSent            int64 // bytes written to clients
	PublishBytesReceived int64 // payload bytes of the PUBLISH packets received, in-process publishes included
	PublishBytesSent     int64 // payload bytes of the PUBLISH packets sent
	Retained             int64 // retained messages stored now
	RetainedRefused      int64 // retained messages refused for MaxRetainedMessages or MaxRetainedBytes
	Subscriptions        int64 // subscriptions now
	InflightOut          int64 // QoS 1/2 messages sent and not yet acknowledged
	Queued               int64 // messages queued for sessions, paged ones included
	Paged                int64 // of those, deliveries kept only in the store (paged out of memory)
	PageIns              int64 // paged deliveries read back from the store
	WillsSent            int64 // will messages published
	StoreFailures        int64 // store commits that failed (their acknowledgements were withheld)
	WriteTimeouts        int64 // connections reset because the client took nothing for WriteTimeout
	StoreRefused         int64 // operations refused because the store could not write (see Server.StoreHealth)
	DuplicatesSkipped    int64 // QoS 1/2 messages not queued again for a session that already had them (Server.ExpectDuplicates)

	drops [numDropReasons]int64
}

// Dropped returns how many messages were dropped for the reason.
func (st Stats) Dropped(reason DropReason) int64 { return st.drops[dropIndex(reason)] }

// counters are the server's live counters, of which Stats is a snapshot.
type counters struct {
	ClientsConnected     atomic.Int64
	ClientsTotal         atomic.Int64
	ClientsMaximum       atomic.Int64
	ClientsExpired       atomic.Int64
	Connects             atomic.Int64
	ConnectionsAccepted  atomic.Int64
	ConnectsRefused      atomic.Int64
	AuthFailures         atomic.Int64
	ConnectionsRejected  atomic.Int64
	RateLimited          atomic.Int64
	SubscriptionsRefused atomic.Int64
	ProtocolErrors       atomic.Int64
	MessagesReceived     atomic.Int64
	MessagesSent         atomic.Int64
	PublishDenied        atomic.Int64
	DeliveriesDenied     atomic.Int64
	BytesReceived        atomic.Int64
	BytesSent            atomic.Int64
	PublishBytesReceived atomic.Int64
	PublishBytesSent     atomic.Int64
	Retained             atomic.Int64
	RetainedRefused      atomic.Int64
	Subscriptions        atomic.Int64
	InflightOut          atomic.Int64
	WillsSent            atomic.Int64
	StoreFailures        atomic.Int64
	WriteTimeouts        atomic.Int64
	StoreRefused         atomic.Int64
	Paged                atomic.Int64
	PageIns              atomic.Int64
	DuplicatesSkipped    atomic.Int64

	drops drops // by reason
}

func (st *counters) connected() {
	st.Connects.Add(1)
	n := st.ClientsConnected.Add(1)
	for {
		m := st.ClientsMaximum.Load()
		if n <= m || st.ClientsMaximum.CompareAndSwap(m, n) {
			return
		}
	}
}

// Stats returns a snapshot of the server's counters. Queued is counted
// over the sessions, so it costs a pass over them.
func (s *Server) Stats() Stats {
	c := &s.stats
	st := Stats{
		ClientsConnected: c.ClientsConnected.Load(), ClientsTotal: c.ClientsTotal.Load(),
		ClientsMaximum: c.ClientsMaximum.Load(), ClientsExpired: c.ClientsExpired.Load(),
		ConnectionsAccepted: c.ConnectionsAccepted.Load(), ConnectsRefused: c.ConnectsRefused.Load(),
		AuthFailures: c.AuthFailures.Load(), ConnectionsRejected: c.ConnectionsRejected.Load(),
		RateLimited: c.RateLimited.Load(), SubscriptionsRefused: c.SubscriptionsRefused.Load(),
		ProtocolErrors: c.ProtocolErrors.Load(), MessagesReceived: c.MessagesReceived.Load(),
		MessagesSent: c.MessagesSent.Load(), PublishDenied: c.PublishDenied.Load(),
		DeliveriesDenied: c.DeliveriesDenied.Load(), BytesReceived: c.BytesReceived.Load(),
		BytesSent: c.BytesSent.Load(), Retained: c.Retained.Load(), RetainedRefused: c.RetainedRefused.Load(),
		Subscriptions: c.Subscriptions.Load(), InflightOut: c.InflightOut.Load(), WillsSent: c.WillsSent.Load(),
		StoreFailures: c.StoreFailures.Load(), WriteTimeouts: c.WriteTimeouts.Load(), StoreRefused: c.StoreRefused.Load(),
		Connects: c.Connects.Load(), PublishBytesReceived: c.PublishBytesReceived.Load(),
		PublishBytesSent: c.PublishBytesSent.Load(), Paged: c.Paged.Load(), PageIns: c.PageIns.Load(),
		DuplicatesSkipped: c.DuplicatesSkipped.Load(),
	}
	for i := range c.drops {
		st.drops[i] = c.drops[i].Load()
		st.MessagesDropped += st.drops[i]
	}
	st.MessagesExpired = st.Dropped(DropExpired)
	s.sessions.each(func(ss *session) {
		ss.mu.Lock()
		st.Queued += int64(ss.queuedLocked())
		ss.mu.Unlock()
	})
	return st
}
