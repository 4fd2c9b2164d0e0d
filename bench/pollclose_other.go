//go:build !linux

package bench

import "errors"

// peerClosed needs poll(2) with POLLRDHUP, which only Linux has: elsewhere
// the stuck subscribers' closes are not detected.
func peerClosed(fds []int) ([]bool, error) {
	return nil, errors.New("bench: detecting closes without reading needs Linux")
}
