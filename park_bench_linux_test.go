package tern

import (
	"container/heap"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// parkedPoller returns a poller holding n parked fake connections (no
// sockets), with keep alive deadlines spread over the minute after now.
func parkedPoller(n int, now int64) *idlePoller {
	p := newIdlePoller(slog.Default())
	p.parked = make(map[int32]*Client, n)
	for i := range n {
		c := &Client{fd: i}
		c.parkDeadline = now + int64(time.Minute)*int64(i+1)/int64(n)
		p.parked[int32(i)] = c
		heap.Push(&p.due, c)
	}
	return p
}

// scanExpiredLocked is the keep alive check as it was before the heap: a
// scan of every parked connection at each tick. Kept for
// BenchmarkParkedExpiry's comparison only.
func (p *idlePoller) scanExpiredLocked(now int64, due []*Client) []*Client {
	for fd, c := range p.parked {
		if c.parkDeadline != 0 && now >= c.parkDeadline {
			delete(p.parked, fd)
			due = append(due, c)
		}
	}
	return due
}

// BenchmarkParkedExpiry is the cost of one keep alive check (a tick of
// idlePoller.expire, every 250 ms) with 100,000 parked connections of
// which none is due: "scan" is the former O(n) check, "heap" the current
// one. "wake-map" and "wake-heap" are the poller's bookkeeping for one
// wake and park of a connection, before (the map) and now (the map and
// the heap): what the heap costs instead.
func BenchmarkParkedExpiry(b *testing.B) {
	const n = 100_000
	now := time.Now().UnixNano()
	for _, kind := range []string{"scan", "heap"} {
		b.Run(fmt.Sprintf("%s/parked=%d", kind, n), func(b *testing.B) {
			p := parkedPoller(n, now)
			due := make([]*Client, 0, 16)
			b.ResetTimer()
			for range b.N {
				p.mu.Lock()
				if kind == "scan" {
					due = p.scanExpiredLocked(now, due[:0])
				} else {
					due = p.expiredLocked(now, due[:0])
				}
				p.mu.Unlock()
			}
			if len(due) != 0 || len(p.parked) != n {
				b.Fatalf("%d expired, %d parked", len(due), len(p.parked))
			}
		})
	}
	for _, kind := range []string{"wake-map", "wake-heap"} {
		b.Run(fmt.Sprintf("%s/parked=%d", kind, n), func(b *testing.B) {
			p := parkedPoller(n, now)
			b.ResetTimer()
			for i := range b.N {
				c := p.parked[int32(i%n)]
				p.mu.Lock()
				if kind == "wake-map" { // before: the map alone
					delete(p.parked, int32(c.fd))
					p.parked[int32(c.fd)] = c
				} else {
					p.unparkLocked(c)
					c.parkDeadline += int64(time.Minute)
					p.parked[int32(c.fd)] = c
					heap.Push(&p.due, c)
				}
				p.mu.Unlock()
			}
		})
	}
}
