package auth

import "sync/atomic"

// verifications counts the password hashes computed, for tests of the
// cache.
var verifications atomic.Int64
