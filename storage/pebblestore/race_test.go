//go:build race

package pebblestore_test

// raceEnabled makes the big tests smaller under the race detector, which
// slows Pebble down tenfold.
const raceEnabled = true
