//go:build race

package httpauth

// raceEnabled makes the connect storm smaller under the race detector,
// which slows the broker and the test service many times over.
const raceEnabled = true
