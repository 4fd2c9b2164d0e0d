package tern

import "time"

// Seams for the package's external tests.

// SetReserveWait changes how long a large packet waits for room in the
// message memory budget, and returns a function that restores it.
func SetReserveWait(d time.Duration) (restore func()) {
	old := reserveWait
	reserveWait = d
	return func() { reserveWait = old }
}
