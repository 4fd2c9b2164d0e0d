//go:build !linux

package bench

import (
	"errors"
	"net"
)

// peerClosed needs poll(2) with POLLRDHUP, which only Linux has: elsewhere
// the stuck subscribers' closes are not detected.
func peerClosed(fds []int) ([]bool, error) {
	return nil, errors.New("bench: detecting closes without reading needs Linux")
}

// farEndKey is Linux only.
func farEndKey(local, remote net.Addr) string { return "" }

// farEndClosed needs /proc/net/tcp.
func farEndClosed(keys []string) ([]bool, int, error) {
	return nil, 0, errors.New("bench: no /proc/net/tcp")
}
