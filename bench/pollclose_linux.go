package bench

import "golang.org/x/sys/unix"

// peerClosed reports, for each file descriptor, whether the peer has
// closed its side of the connection or the connection has failed, without
// reading it: poll(2) with POLLRDHUP and no wait. Data waiting to be read
// does not count.
func peerClosed(fds []int) ([]bool, error) {
	pfds := make([]unix.PollFd, len(fds))
	for i, fd := range fds {
		pfds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLRDHUP}
	}
	for {
		_, err := unix.Poll(pfds, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	out := make([]bool, len(fds))
	for i, p := range pfds {
		out[i] = p.Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	}
	return out, nil
}
