package tern

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// Memory accounting. The server counts, in one broker-wide figure, the
// memory held by messages waiting in session queues or inflight windows:
// each message's bytes once, however many sessions hold it, plus a fixed
// cost per queued or inflight copy. Options.MaxMessageMemory caps it; see
// session.enqueue for what happens at the cap.
const (
	// deliveryCost is what one queued or inflight delivery costs beyond
	// its message: the queue slot or inflight entry.
	deliveryCost = 64
	// messageCost is what a Message costs beyond its topic, payload and
	// properties.
	messageCost = 160
)

// cost returns the bytes m occupies in memory.
func (m *Message) cost() int64 {
	n := int64(messageCost + len(m.Topic) + len(m.Payload))
	if p := m.Properties; p != nil {
		n += int64(len(p.ContentType) + len(p.ResponseTopic) + len(p.CorrelationData) + 64)
		for _, u := range p.User {
			n += int64(len(u.Key) + len(u.Value) + 32)
		}
	}
	return n
}

// memBudget is the broker-wide count of message memory and its cap.
type memBudget struct {
	limit int64 // bytes; 0 = no limit
	used  atomic.Int64
}

// hold records that a delivery of m now lives in a queue or inflight
// window and returns what that costs; the caller adds it to used, once
// for many deliveries where it can (used is shared by every core).
func (b *memBudget) hold(m *Message) int64 {
	c := int64(deliveryCost)
	if m.held.Add(1) == 1 {
		c += m.cost()
	}
	return c
}

// release records that a delivery of m left its queue or window and
// returns what that gives back, for the caller to take from used.
func (b *memBudget) release(m *Message) int64 {
	c := int64(deliveryCost)
	if m.held.Add(-1) == 0 {
		c += m.cost()
	}
	return c
}

// add changes used by n.
func (b *memBudget) add(n int64) {
	if n != 0 {
		b.used.Add(n)
	}
}

// reserve takes n bytes if they fit under the cap, and reports whether
// it did.
func (b *memBudget) reserve(n int64) bool {
	for {
		u := b.used.Load()
		if b.limit != 0 && u+n > b.limit && u > 0 {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// full reports whether holding one more delivery of m would pass the cap.
func (b *memBudget) full(m *Message) bool {
	if b.limit == 0 {
		return false
	}
	need := int64(deliveryCost)
	if m.held.Load() == 0 {
		need += m.cost()
	}
	return b.used.Load()+need > b.limit
}

// DefaultMessageMemory returns the default of Options.MaxMessageMemory: a
// quarter of the memory this process may use (the container's limit when
// there is one, else the machine's memory), at least 64 MiB; 1 GiB when
// neither can be read.
func DefaultMessageMemory() int64 {
	total := systemMemory()
	if total <= 0 {
		return 1 << 30
	}
	return max(total/4, 64<<20)
}

// DefaultRetainedBytes returns the default of Options.MaxRetainedBytes: an
// eighth of the memory this process may use, between 64 MiB and 1 GiB.
func DefaultRetainedBytes() int64 {
	total := systemMemory()
	if total <= 0 {
		return 1 << 30
	}
	return min(max(total/8, 64<<20), 1<<30)
}

// systemMemory returns the smaller of the cgroup memory limit and the
// machine's memory, in bytes, or 0 when neither can be read.
func systemMemory() int64 {
	var total int64
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err == nil {
					total = kb << 10
				}
				break
			}
		}
		f.Close()
	}
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err == nil && v > 0 && (total == 0 || v < total) {
			total = v
		}
		break
	}
	return total
}
