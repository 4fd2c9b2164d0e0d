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
	MessagesDropped      atomic.Int64 // messages dropped (see DropObserver)
	MessagesExpired      atomic.Int64 // messages dropped because they expired
	PublishDenied        atomic.Int64 // PUBLISH refused by an authorizer or interceptor
	DeliveriesDenied     atomic.Int64 // deliveries to a client skipped because an authorizer denied Deliver access
	BytesReceived        atomic.Int64
	BytesSent            atomic.Int64
	Retained             atomic.Int64 // retained messages stored now
	Subscriptions        atomic.Int64 // subscriptions now
	InflightOut          atomic.Int64 // QoS 1/2 messages sent and not yet acknowledged
	Queued               atomic.Int64 // messages queued for sessions now
	WillsSent            atomic.Int64
	StoreFailures        atomic.Int64 // store commits that failed (their acknowledgements were withheld)
	StoreRefused         atomic.Int64 // operations refused because the store could not write (see Server.StoreHealth)
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

// Stats returns the server's live counters.
func (s *Server) Stats() *Stats { return &s.stats }
