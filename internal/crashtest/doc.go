// Package crashtest holds Tern's process-level crash tests. They build the
// tern binary, run `tern serve` as a child process on a data directory,
// drive it with MQTT clients over real sockets, kill it with SIGKILL at
// chosen moments, restart it on the same directory and check that nothing
// the broker acknowledged was lost, resurrected or delivered twice.
//
// The package has no code of its own: everything is in its tests. A plain
// `go test` runs a short, bounded version of every test; the environment
// variables below make them longer (see BENCHMARKS.md for measured soak
// runs):
//
//	TERN_CRASH_ROUNDS  kill rounds of the load tests (default 6 sync, 3 periodic; soak 24 and 12)
//	TERN_CRASH_REPEAT  runs of the whole kill-at-acknowledgement matrix (default: each case twice; soak 20)
//	TERN_CRASH_SEED    seed of the kill moments (default fixed)
//	TERN_SOAK=1        all of the above at soak size, and the periodic full-disk case
//	TERN_CRASH_RACE=1  build the broker with the race detector
package crashtest
