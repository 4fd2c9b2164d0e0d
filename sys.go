package tern

import (
	"math"
	"runtime/metrics"
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
	var load sysLoad
	for {
		s.publishSysStats(&load, time.Now())
		select {
		case <-s.done:
			return
		case <-t.C:
		}
	}
}

// sysLoad is the state of the $SYS/broker/load topics: Mosquitto's moving
// averages, per minute, over 1, 5 and 15 minutes, updated every
// SysInterval.
type sysLoad struct {
	last    time.Time
	prev    [numLoads]int64
	avg     [numLoads][3]float64
	heapMax int64
}

// The counts whose rates $SYS/broker/load publishes, and their topics.
const (
	loadMsgReceived = iota
	loadMsgSent
	loadPubReceived
	loadPubSent
	loadPubDropped
	loadBytesReceived
	loadBytesSent
	loadSockets
	loadConnections
	numLoads
)

var loadTopics = [numLoads]string{"messages/received", "messages/sent", "publish/received", "publish/sent",
	"publish/dropped", "bytes/received", "bytes/sent", "sockets", "connections"}

var loadWindows = [3]struct {
	name    string
	seconds float64
}{{"1min", 60}, {"5min", 300}, {"15min", 900}}

// update adds the counts at now to the averages: each moves towards the
// rate of the last interval, per minute, by how much of its window the
// interval is (Mosquitto's calc_load).
func (l *sysLoad) update(counts [numLoads]int64, now time.Time) {
	if l.last.IsZero() {
		l.last, l.prev = now, counts
		return
	}
	dt := now.Sub(l.last).Seconds()
	if dt <= 0 {
		return
	}
	for i := range counts {
		rate := float64(counts[i]-l.prev[i]) * 60 / dt
		for w, win := range loadWindows {
			e := math.Exp(-dt / win.seconds)
			l.avg[i][w] = rate + e*(l.avg[i][w]-rate)
		}
	}
	l.last, l.prev = now, counts
}

// heapBytes reads the heap memory in use by objects.
func heapBytes() int64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(sample[0].Value.Uint64())
}

// publishSysStats publishes Mosquitto's $SYS/broker topics (53 with
// version), and Tern's own: drops by reason and message memory. In Tern
// messages/received and messages/sent count PUBLISH packets, as
// publish/messages/received and sent do (Mosquitto counts every packet
// there).
func (s *Server) publishSysStats(load *sysLoad, now time.Time) {
	st := s.Stats()
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	connected := st.ClientsConnected
	disconnected := max(st.ClientsTotal-connected, 0)
	used, limit := s.MessageMemory()
	s.retainMu.Lock()
	retainedBytes := s.retainedBytes
	s.retainMu.Unlock()
	stored := st.Queued + st.InflightOut + st.Retained
	heap := heapBytes()
	load.heapMax = max(load.heapMax, heap)
	for _, kv := range [...]struct{ k, v string }{
		{"uptime", i(int64(now.Sub(s.started).Seconds())) + " seconds"},
		{"clients/connected", i(connected)},
		{"clients/disconnected", i(disconnected)},
		{"clients/active", i(connected)},      // Mosquitto's older name
		{"clients/inactive", i(disconnected)}, // Mosquitto's older name
		{"clients/total", i(st.ClientsTotal)},
		{"clients/maximum", i(st.ClientsMaximum)},
		{"clients/expired", i(st.ClientsExpired)},
		{"messages/received", i(st.MessagesReceived)},
		{"messages/sent", i(st.MessagesSent)},
		{"messages/stored", i(stored)},
		{"store/messages/count", i(stored)},
		{"store/messages/bytes", i(used + retainedBytes)},
		{"publish/messages/received", i(st.MessagesReceived)},
		{"publish/messages/sent", i(st.MessagesSent)},
		{"publish/messages/dropped", i(st.MessagesDropped)},
		{"publish/bytes/received", i(st.PublishBytesReceived)},
		{"publish/bytes/sent", i(st.PublishBytesSent)},
		{"bytes/received", i(st.BytesReceived)},
		{"bytes/sent", i(st.BytesSent)},
		{"subscriptions/count", i(st.Subscriptions)},
		{"shared_subscriptions/count", i(int64(s.index.SharedCount()))},
		{"retained messages/count", i(st.Retained)},
		{"heap/current", i(heap)},
		{"heap/maximum", i(load.heapMax)},
	} {
		s.publishSys("$SYS/broker/"+kv.k, kv.v)
	}
	load.update([numLoads]int64{
		loadMsgReceived: st.MessagesReceived, loadMsgSent: st.MessagesSent,
		loadPubReceived: st.MessagesReceived, loadPubSent: st.MessagesSent, loadPubDropped: st.MessagesDropped,
		loadBytesReceived: st.BytesReceived, loadBytesSent: st.BytesSent,
		loadSockets: st.ConnectionsAccepted, loadConnections: st.Connects + st.ConnectsRefused,
	}, now)
	for k, topic := range loadTopics {
		for w, win := range loadWindows {
			s.publishSys("$SYS/broker/load/"+topic+"/"+win.name, strconv.FormatFloat(load.avg[k][w], 'f', 2, 64))
		}
	}
	for _, r := range DropReasons {
		s.publishSys("$SYS/broker/publish/messages/dropped/"+string(r), i(st.Dropped(r)))
	}
	s.publishSys("$SYS/broker/memory/messages/bytes", i(used))
	s.publishSys("$SYS/broker/memory/messages/limit", i(limit))
}
