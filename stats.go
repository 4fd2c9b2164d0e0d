package tern

import "sync/atomic"

// Stats are the server's counters, read with the atomic types' Load. They
// feed $SYS topics and metrics.
type Stats struct {
	ClientsConnected     atomic.Int64 // connections with an established session now
	ClientsTotal         atomic.Int64 // sessions now, online and offline
	ClientsMaximum       atomic.Int64 // most ClientsConnected seen
	ClientsExpired       atomic.Int64 // sessions ended by expiry
	ConnectionsAccepted  atomic.Int64 // network connections accepted
	ConnectsRefused      atomic.Int64 // CONNECTs refused (auth, protocol, ...)
	AuthFailures         atomic.Int64 // CONNECTs refused by authentication
	ConnectionsRejected  atomic.Int64 // connections closed at accept: MaxConnections or a listener's limit
	RateLimited          atomic.Int64 // clients disconnected for MaxPublishRate or MaxPublishBytesRate
	SubscriptionsRefused atomic.Int64 // filters refused for MaxSubscriptionsPerClient
	ProtocolErrors       atomic.Int64 // connections closed for a malformed or invalid packet
	MessagesReceived     atomic.Int64 // PUBLISH packets received
	MessagesSent         atomic.Int64 // PUBLISH packets sent
	MessagesDropped      atomic.Int64 // messages dropped (see DropObserver), counted when Stats is called: the sum of Dropped
	MessagesExpired      atomic.Int64 // messages dropped because they expired: Dropped(DropExpired), when Stats is called
	PublishDenied        atomic.Int64 // PUBLISH refused by an authorizer or interceptor
	DeliveriesDenied     atomic.Int64 // deliveries to a client skipped because an authorizer denied Deliver access
	BytesReceived        atomic.Int64
	BytesSent            atomic.Int64
	Retained             atomic.Int64 // retained messages stored now
	RetainedRefused      atomic.Int64 // retained messages refused for MaxRetainedMessages or MaxRetainedBytes
	Subscriptions        atomic.Int64 // subscriptions now
	InflightOut          atomic.Int64 // QoS 1/2 messages sent and not yet acknowledged
	Queued               atomic.Int64 // messages queued for sessions, counted when Stats is called
	WillsSent            atomic.Int64
	StoreFailures        atomic.Int64 // store commits that failed (their acknowledgements were withheld)
	WriteTimeouts        atomic.Int64 // connections closed because the client took nothing for WriteTimeout

	drops drops // MessagesDropped by reason: see Dropped
}

func (st *Stats) connected() {
	n := st.ClientsConnected.Add(1)
	for {
		m := st.ClientsMaximum.Load()
		if n <= m || st.ClientsMaximum.CompareAndSwap(m, n) {
			return
		}
	}
}

// Stats returns the server's live counters, with Queued counted now.
func (s *Server) Stats() *Stats {
	var n int64
	s.sessions.each(func(ss *session) {
		ss.mu.Lock()
		n += int64(ss.queuedLocked())
		ss.mu.Unlock()
	})
	s.stats.Queued.Store(n)
	var dropped int64
	for i := range s.stats.drops {
		dropped += s.stats.drops[i].Load()
	}
	s.stats.MessagesDropped.Store(dropped)
	s.stats.MessagesExpired.Store(s.stats.Dropped(DropExpired))
	return &s.stats
}
