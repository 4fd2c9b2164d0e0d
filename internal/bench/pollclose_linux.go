package bench

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// peerClosed reports, for each file descriptor, whether the peer has
// closed its side of the connection or the connection has failed, without
// reading it: poll(2) with POLLRDHUP and no wait. Data waiting to be read
// does not count.
//
// A peer that closes while data it sent is still unread cannot deliver its
// FIN once the reader's receive window is full: the FIN waits behind the
// data, and poll sees nothing. [farEndClosed] sees those.
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

// tcpEstablished is the ESTABLISHED state in /proc/net/tcp.
const tcpEstablished = 0x01

// farEndKey returns the key under which [farEndStates] lists the far end
// of a connection from local to remote: the far end's own local and remote
// addresses.
func farEndKey(local, remote net.Addr) string {
	l, ok1 := local.(*net.TCPAddr)
	r, ok2 := remote.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return ""
	}
	return procAddr(r) + " " + procAddr(l)
}

// procAddr formats an address as /proc/net/tcp and tcp6 do: the address as
// native-endian 32-bit words in hexadecimal, a colon, the port.
func procAddr(a *net.TCPAddr) string {
	var b strings.Builder
	ip := a.IP
	if ip4 := ip.To4(); ip4 != nil {
		ip = ip4
	}
	for i := 0; i+4 <= len(ip); i += 4 {
		fmt.Fprintf(&b, "%08X", binary.NativeEndian.Uint32(ip[i:i+4]))
	}
	fmt.Fprintf(&b, ":%04X", a.Port)
	return b.String()
}

// farEndStates reads the state of every TCP socket of this network
// namespace from /proc/net/tcp and tcp6, by "local remote" address.
func farEndStates() (map[string]uint8, error) {
	states := map[string]uint8{}
	read := 0
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		read++
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 {
				continue
			}
			st, err := strconv.ParseUint(fields[3], 16, 8)
			if err != nil {
				continue
			}
			states[fields[1]+" "+fields[2]] = uint8(st)
		}
		f.Close()
	}
	if read == 0 {
		return nil, fmt.Errorf("bench: no /proc/net/tcp")
	}
	return states, nil
}

// farEndClosed reports, for each key from [farEndKey], whether the far end
// of the connection, on this machine, has left the ESTABLISHED state (it
// closed or shut down its socket, even if its FIN cannot reach us) or is
// gone, and how many far ends it found. The far ends of connections to
// another machine or network namespace are never found.
func farEndClosed(keys []string) (closed []bool, found int, err error) {
	states, err := farEndStates()
	if err != nil {
		return nil, 0, err
	}
	closed = make([]bool, len(keys))
	for i, k := range keys {
		if k == "" {
			continue
		}
		st, ok := states[k]
		if ok {
			found++
		}
		closed[i] = !ok || st != tcpEstablished
	}
	return closed, found, nil
}
