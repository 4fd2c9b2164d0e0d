package tern

import (
	"testing"
	"unsafe"
)

// TestStructSizes documents what an idle connection costs in the structs
// it keeps and keeps them from growing unnoticed: a field added to Client
// or session costs that much more per connection (10,000 idle clients:
// 10 kB for each 8 bytes, about twice that in RSS with the collector's
// headroom). The bounds are size classes of Go's allocator, on 64-bit
// platforms: growing past one costs the whole step to the next class.
func TestStructSizes(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("sizes are for 64-bit platforms")
	}
	for _, s := range []struct {
		what      string
		size, max uintptr
	}{
		{"Client", unsafe.Sizeof(Client{}), 320},   // was 520 (576-byte class), then 416
		{"session", unsafe.Sizeof(session{}), 208}, // was 264 (288-byte class), then 256
	} {
		if s.size > s.max {
			t.Errorf("%s is %d bytes, more than %d: move what idle connections do not need behind a pointer, or order the fields to leave no padding", s.what, s.size, s.max)
		}
	}
}
