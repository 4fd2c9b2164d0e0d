package tern

// SetMaxBatchOps sets how many changes a persister batch takes before the
// next ones go to a new one, for tests; it returns a function that
// restores the default. Not safe while a server runs.
func SetMaxBatchOps(n int) (restore func()) {
	old := maxBatchOps
	maxBatchOps = n
	return func() { maxBatchOps = old }
}
