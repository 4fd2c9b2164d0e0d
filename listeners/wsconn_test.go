package listeners

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"testing"
)

// Payloads of every length class (7-bit, 16-bit and 64-bit lengths) cross
// in both directions and are read back with buffers of awkward sizes, so
// unmasking resumes mid-frame.
func TestWSConnStream(t *testing.T) {
	for _, size := range []int{0, 1, 125, 126, 65535, 65536, 300_000} {
		a, b := net.Pipe()
		client, server := newWSConn(a, nil, true), newWSConn(b, nil, false)
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(rand.IntN(256))
		}
		for _, dir := range []struct {
			name     string
			from, to *wsConn
		}{{"client to server", client, server}, {"server to client", server, client}} {
			errc := make(chan error, 1)
			go func() {
				// Two writes: two frames, read back as one stream.
				_, err := dir.from.Write(payload)
				if err == nil {
					_, err = dir.from.Write([]byte("end"))
				}
				errc <- err
			}()
			got := make([]byte, 0, size+3)
			buf := make([]byte, 997)
			for len(got) < size+3 {
				n, err := dir.to.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					t.Fatalf("%d bytes %s: read: %v", size, dir.name, err)
				}
			}
			if err := <-errc; err != nil {
				t.Fatalf("%d bytes %s: write: %v", size, dir.name, err)
			}
			if !bytes.Equal(got[:size], payload) || string(got[size:]) != "end" {
				t.Fatalf("%d bytes %s: stream differs", size, dir.name)
			}
		}
		a.Close()
		b.Close()
	}
}

// A peer that goes away in the middle of a frame is an unexpected EOF.
func TestWSConnTruncatedFrame(t *testing.T) {
	a, b := net.Pipe()
	server := newWSConn(b, nil, false)
	go func() {
		a.Write([]byte{0x82, 0x85, 1, 2, 3, 4, 'x'}) // 5 bytes announced, 1 sent
		a.Close()
	}()
	buf := make([]byte, 10)
	var err error
	for err == nil {
		_, err = server.Read(buf)
	}
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("error %v, want unexpected EOF", err)
	}
}
