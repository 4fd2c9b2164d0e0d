//go:build !unix

package ban

import "os"

// lockFile does not lock where flock is missing: keep to the admin API
// while the broker runs.
func lockFile(path string) (*os.File, error) { return os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600) }

func unlockFile(f *os.File) error { return f.Close() }
