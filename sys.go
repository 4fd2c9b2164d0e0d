package tern

import (
	"strconv"
	"time"
)

// sysLoop publishes the $SYS/broker topics every SysInterval, retained, as
// Mosquitto names them. Wildcard subscriptions starting with + or # do not
// match them [MQTT-4.7.2-1].
func (s *Server) sysLoop() {
	t := time.NewTicker(s.cfg.SysInterval)
	defer t.Stop()
	s.publishSys("$SYS/broker/version", "tern "+Version)
	for {
		s.publishSysStats()
		select {
		case <-s.done:
			return
		case <-t.C:
		}
	}
}

func (s *Server) publishSysStats() {
	st := s.Stats()
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	connected := st.ClientsConnected
	total := st.ClientsTotal
	for _, kv := range [...]struct{ k, v string }{
		{"uptime", i(int64(time.Since(s.started).Seconds())) + " seconds"},
		{"clients/connected", i(connected)},
		{"clients/disconnected", i(max(total-connected, 0))},
		{"clients/total", i(total)},
		{"clients/maximum", i(st.ClientsMaximum)},
		{"clients/expired", i(st.ClientsExpired)},
		{"messages/received", i(st.MessagesReceived)},
		{"messages/sent", i(st.MessagesSent)},
		{"messages/stored", i(st.Queued + st.Retained)},
		{"publish/messages/dropped", i(st.MessagesDropped)},
		{"bytes/received", i(st.BytesReceived)},
		{"bytes/sent", i(st.BytesSent)},
		{"subscriptions/count", i(st.Subscriptions)},
		{"retained messages/count", i(st.Retained)},
	} {
		s.publishSys("$SYS/broker/"+kv.k, kv.v)
	}
	for _, r := range DropReasons {
		s.publishSys("$SYS/broker/publish/messages/dropped/"+string(r), i(st.Dropped(r)))
	}
	used, limit := s.MessageMemory()
	s.publishSys("$SYS/broker/memory/messages/bytes", i(used))
	s.publishSys("$SYS/broker/memory/messages/limit", i(limit))
}
