package faultproxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echo starts a line echo server.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, r *bufio.Reader, line string, wait time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

func TestProxyModes(t *testing.T) {
	p, err := New("127.0.0.1:0", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if got, err := roundTrip(c, r, "one", 10*time.Second); err != nil || got != "one\n" {
		t.Fatalf("open: %q %v", got, err)
	}

	// Blackhole: nothing comes back, the connection stays open, and what
	// was held goes through once open again.
	p.Set(Blackhole)
	if got, err := roundTrip(c, r, "two", 200*time.Millisecond); err == nil {
		t.Fatalf("blackhole let %q through", got)
	}
	late, err := net.Dial("tcp", p.Addr()) // accepted, never forwarded
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		p.mu.Lock()
		n := len(p.held)
		p.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("connection not accepted during the blackhole")
		}
		time.Sleep(time.Millisecond) // the accept loop takes it: polled
	}
	p.Set(Open)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "two\n" {
		t.Fatalf("after the blackhole: %q %v", got, err)
	}
	late.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := late.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection accepted during the blackhole was not reset")
	}

	// Reset: the connection fails, new ones too, until open again.
	p.Set(Reset)
	if _, err := roundTrip(c, r, "three", 10*time.Second); err == nil {
		t.Fatal("reset connection still works")
	}
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		c2.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c2.Read(make([]byte, 1)); err == nil {
			t.Fatal("new connection not reset")
		}
		c2.Close()
	}
	p.Set(Open)
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, bufio.NewReader(c3), "four", 10*time.Second); err != nil || got != "four\n" {
		t.Fatalf("healed: %q %v", got, err)
	}
}

func TestRefuser(t *testing.T) {
	addr, free, err := Refuser()
	if err != nil {
		t.Fatal(err)
	}
	defer free()
	if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		c.Close()
		t.Fatal("refuser accepted a connection")
	}
}
