package bench

import (
	"math/bits"
	"time"
)

// histogram records durations with a relative error below 1/subBuckets
// (about 1.6%) from 1 ns to about 18 minutes, in constant memory. It is
// log-linear: each power of two is split into subBuckets equal buckets.
// It is not safe for concurrent use; merge per-goroutine histograms.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    int64
}

const (
	subBits     = 6
	subBuckets  = 1 << subBits
	histExps    = 40 - subBits + 1 // values up to 2^40 ns
	histBuckets = (histExps + 1) * subBuckets
)

// bucketOf returns the bucket index for a value in nanoseconds.
func bucketOf(v int64) int {
	if v < subBuckets {
		if v < 0 {
			return 0
		}
		return int(v) // exact below subBuckets
	}
	e := bits.Len64(uint64(v)) - subBits // >= 1
	i := e*subBuckets + int(uint64(v)>>(e-1)) - subBuckets
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// bucketUpper returns the largest value that falls in bucket i.
func bucketUpper(i int) int64 {
	if i < subBuckets {
		return int64(i)
	}
	e := i / subBuckets
	m := int64(i%subBuckets + subBuckets)
	return (m+1)<<(e-1) - 1
}

// record adds one value in nanoseconds.
func (h *histogram) record(v int64) {
	h.counts[bucketOf(v)]++
	h.n++
	if v > h.max {
		h.max = v
	}
}

// merge adds o's values to h.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the value at quantile q (0 < q <= 1): the upper bound of
// the bucket holding it, capped at the largest value recorded.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketUpper(i), h.max))
		}
	}
	return time.Duration(h.max)
}
