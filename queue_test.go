package tern

import (
	"math/rand/v2"
	"testing"
)

// The session queue agrees with a plain slice under random pushes, pops
// and removals of the oldest QoS 0 delivery, holes and growth included.
func TestQueueAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var q queue
	var model []delivery
	msgs := make([]*Message, 64)
	for i := range msgs {
		msgs[i] = &Message{Topic: "t"}
	}
	for op := 0; op < 200_000; op++ {
		switch r := rng.IntN(10); {
		case r < 5:
			d := delivery{msg: msgs[rng.IntN(len(msgs))], qos: byte(rng.IntN(3)), subID: uint32(op)}
			q.push(d)
			model = append(model, d)
		case r < 8:
			if len(model) == 0 {
				continue
			}
			if got := q.pop(); got.subID != model[0].subID {
				t.Fatalf("op %d: pop %d, want %d", op, got.subID, model[0].subID)
			}
			model = model[1:]
		default:
			got, ok := q.removeOldestQoS0()
			idx := -1
			for i, d := range model {
				if d.qos == 0 {
					idx = i
					break
				}
			}
			if ok != (idx >= 0) || ok && got.subID != model[idx].subID {
				t.Fatalf("op %d: removeOldestQoS0 = %d %v, want index %d", op, got.subID, ok, idx)
			}
			if ok {
				model = append(model[:idx], model[idx+1:]...)
			}
		}
		if q.len() != len(model) {
			t.Fatalf("op %d: len %d, want %d", op, q.len(), len(model))
		}
		if len(model) > 0 && q.peek().subID != model[0].subID {
			t.Fatalf("op %d: peek %d, want %d", op, q.peek().subID, model[0].subID)
		}
	}
	rest := q.drain()
	if len(rest) != len(model) {
		t.Fatalf("drain %d, want %d", len(rest), len(model))
	}
	for i := range rest {
		if rest[i].subID != model[i].subID {
			t.Fatalf("drain[%d] = %d, want %d", i, rest[i].subID, model[i].subID)
		}
	}
}

// Making room in a full queue of QoS 1 deliveries with old QoS 0 ones at
// the back costs no scan of the whole queue each time.
func BenchmarkQueueEvictQoS0(b *testing.B) {
	var q queue
	m := &Message{Topic: "t"}
	for i := 0; i < 100_000; i++ {
		q.push(delivery{msg: m, qos: 1})
	}
	for i := 0; i < b.N+1; i++ {
		q.push(delivery{msg: m, qos: 0})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := q.removeOldestQoS0(); !ok {
			b.Fatal("no QoS 0")
		}
		q.push(delivery{msg: m, qos: 1})
	}
}
