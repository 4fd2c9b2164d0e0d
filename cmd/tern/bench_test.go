package main

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/bench"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/terntest"
)

// runBenchCLI runs "tern bench ARGS --json --quiet" against srv and decodes
// the summary.
func runBenchCLI(t *testing.T, srv *terntest.Server, args ...string) *bench.Result {
	t.Helper()
	return runBenchAt(t, srv.Addr, args...)
}

// runBenchAt runs "tern bench ARGS --json --quiet" against the broker at
// addr and decodes the summary.
func runBenchAt(t *testing.T, addr string, args ...string) *bench.Result {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	root := rootCmd()
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(append([]string{"bench"}, args...), "-h", host, "-p", port, "--json", "--quiet"))
	if err := root.Execute(); err != nil {
		t.Fatalf("tern bench %v: %v\n%s", args, err, errOut.String())
	}
	var res bench.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("decoding the summary: %v\n%s", err, out.String())
	}
	if res.Errors != 0 || res.Connect.Failed != 0 {
		t.Fatalf("tern bench %v: %d errors, %d failed connections: %s", args, res.Errors, res.Connect.Failed, res.FirstError)
	}
	return &res
}

// TestBenchAgainstTern runs every scenario briefly against an in-process
// broker and checks the accounting: nothing lost, nothing duplicated.
func TestBenchAgainstTern(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		copies int64 // deliveries expected per message sent
	}{
		{"pairs-qos0", []string{"pairs", "-c", "4"}, 1},
		{"pairs-qos1-v5", []string{"pairs", "-c", "3", "-q", "1", "-V", "5"}, 1},
		{"pairs-qos2", []string{"pairs", "-c", "3", "-q", "2", "--window", "20"}, 1},
		{"fanin", []string{"fanin", "-c", "5", "-q", "1"}, 1},
		{"fanout", []string{"fanout", "-c", "5"}, 5},
		{"latency", []string{"latency", "-c", "4", "--rate", "2000"}, 1},
		{"pub", []string{"pub", "-c", "2", "-q", "2"}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := terntest.NewServer(t, nil)
			res := runBenchCLI(t, srv, append(tc.args, "-d", "1s", "--rate", "20000", "--drain", "5s")...)
			want := res.Sent * tc.copies
			if res.Sent == 0 || res.Lost != 0 || res.Duplicates != 0 || res.Unexpected != 0 || res.Received != want {
				t.Errorf("sent %d, received %d (want %d), lost %d, duplicates %d, unexpected %d",
					res.Sent, res.Received, want, res.Lost, res.Duplicates, res.Unexpected)
			}
			if res.QoS > 0 && res.Acked != res.Sent {
				t.Errorf("acked %d of %d", res.Acked, res.Sent)
			}
			if tc.name == "latency" && (res.Latency == nil || res.Latency.Count != uint64(res.Received)) {
				t.Errorf("latency: %+v", res.Latency)
			}
		})
	}
	t.Run("conn", func(t *testing.T) {
		t.Parallel()
		srv := terntest.NewServer(t, nil)
		res := runBenchCLI(t, srv, "conn", "-c", "50", "-d", "1s")
		if res.Connect.Succeeded != 50 {
			t.Errorf("%d of 50 connected", res.Connect.Succeeded)
		}
	})
	t.Run("retained", func(t *testing.T) {
		t.Parallel()
		srv := terntest.NewServer(t, nil)
		res := runBenchCLI(t, srv, "retained", "-c", "2000", "-d", "5s")
		if r := res.Retained; r == nil || r.Stored != 2000 || r.Delivered != 2000 || res.Lost != 0 || res.Duplicates != 0 {
			t.Errorf("retained %+v, lost %d, duplicates %d", res.Retained, res.Lost, res.Duplicates)
		}
	})
	t.Run("sub", func(t *testing.T) {
		t.Parallel()
		srv := terntest.NewServer(t, nil)
		// The subscribers stop at --limit: 2 publishers x 500 messages x 2.
		subDone := make(chan *bench.Result, 1)
		ready := make(chan struct{})
		go func() {
			res, err := bench.Run(t.Context(), bench.Config{
				Scenario: bench.Sub, Addr: srv.Addr, Count: 2, Limit: 2000, Duration: 30 * time.Second,
				Ready: func() { close(ready) },
			})
			if err != nil {
				t.Error(err)
			}
			subDone <- res
		}()
		<-ready
		pub := runBenchCLI(t, srv, "pub", "-c", "2", "--limit", "500", "-d", "30s")
		res := <-subDone
		if pub.Sent != 1000 || res.Received != 2000 || res.Lost != 0 || res.Duplicates != 0 || res.Errors != 0 {
			t.Errorf("pub sent %d; sub received %d, lost %d, duplicates %d, errors %d (%s)",
				pub.Sent, res.Received, res.Lost, res.Duplicates, res.Errors, res.FirstError)
		}
	})
}

// TestBenchStressAgainstTern runs every stress scenario briefly against an
// in-process broker and checks that each ran and accounted for its
// clients. What the broker did (closes, memory) is what the scenarios
// measure, so it is not checked here.
func TestBenchStressAgainstTern(t *testing.T) {
	t.Run("stuck", func(t *testing.T) {
		t.Parallel()
		srv := terntest.NewServer(t, nil)
		res := runBenchCLI(t, srv, "stuck", "-c", "5", "-d", "300ms", "--rate", "2000", "-V", "5")
		s := res.Stuck
		if s == nil || s.Stuck != 5 || len(s.Phases) != 2 || res.PayloadSize != 256 {
			t.Fatalf("stuck %+v, payload %d", s, res.PayloadSize)
		}
		for _, ph := range s.Phases {
			if ph.Published == 0 || ph.Received != ph.Published {
				t.Errorf("phase %+v", ph)
			}
		}
	})
	t.Run("stuck-baseline-persistent", func(t *testing.T) {
		t.Parallel()
		srv := terntest.NewServer(t, nil)
		res := runBenchCLI(t, srv, "stuck", "-c", "0", "-d", "200ms", "--rate", "1000")
		if s := res.Stuck; s == nil || s.Stuck != 0 || s.Requested != 0 || len(s.Phases) != 2 {
			t.Fatalf("stuck %+v", s)
		}
		res = runBenchCLI(t, srv, "stuck", "-c", "2", "-d", "200ms", "--rate", "1000", "--stuck-persistent", "--stuck-keepalive", "30")
		if s := res.Stuck; s == nil || s.Stuck != 2 || !s.Persisted || s.KeepAlive != 30 {
			t.Fatalf("stuck %+v", s)
		}
	})
	t.Run("retflood", func(t *testing.T) {
		t.Parallel()
		srv := terntest.NewServer(t, nil)
		res := runBenchCLI(t, srv, "retflood", "-c", "200", "--repeat", "20", "-d", "1s", "--settle", "10ms")
		if f := res.RetFlood; f == nil || f.Stored != 200 || f.Written != 20 || f.Cleared != 200 {
			t.Fatalf("retflood %+v", f)
		}
	})
	t.Run("partial", func(t *testing.T) {
		t.Parallel()
		srv := terntest.NewServer(t, nil)
		res := runBenchCLI(t, srv, "partial", "-c", "10", "--large", "2", "-k", "1", "-d", "1s",
			"--declared", "10000", "--body", "5000", "--drip-max", "2s", "--settle", "10ms")
		p := res.Partial
		if p == nil || p.KeepAlive != 1 || p.A == nil || p.A.Connected != 10 || p.A.Closes.Count+p.A.StillOpen != 10 ||
			p.B == nil || p.B.Connected != 2 || p.C == nil || p.C.Dripped == 0 {
			t.Fatalf("partial %+v", p)
		}
	})
	t.Run("filters", func(t *testing.T) {
		t.Parallel()
		srv := terntest.NewServer(t, nil)
		res := runBenchCLI(t, srv, "filters", "-c", "2", "--levels", "100", "--filters", "3000", "--batch", "500", "--settle", "10ms")
		f := res.Filters
		if f == nil || f.Deep == nil || f.Deep.First != "0x00" || f.Deep.Answers["0x00"] != 2 || f.Many == nil || f.Many.Granted != 3000 {
			t.Fatalf("filters %+v", f)
		}
	})
	t.Run("filters-v5", func(t *testing.T) {
		t.Parallel()
		srv := terntest.NewServer(t, nil)
		res := runBenchCLI(t, srv, "filters", "-V", "5", "--parts", "a", "-c", "1", "--levels", "65531", "--settle", "10ms")
		f := res.Filters
		if f == nil || f.Many != nil || f.Deep == nil || f.Deep.FilterBytes != 65535 || f.Deep.PacketBytes <= 65535 || f.Deep.BrokerMaxPacket == 0 {
			t.Fatalf("filters %+v", f)
		}
	})
	t.Run("conn-tls", func(t *testing.T) {
		t.Parallel()
		srv := terntest.NewServer(t, nil)
		certFile, keyFile := selfSigned(t, t.TempDir(), "tern test") // for 127.0.0.1
		st, err := listeners.NewServerTLS(listeners.TLSOptions{CertFile: certFile, KeyFile: keyFile})
		if err != nil {
			t.Fatal(err)
		}
		l := listeners.NewTLS("tls", "127.0.0.1:0", st)
		if err := l.Listen(); err != nil {
			t.Fatal(err)
		}
		if err := srv.AddListener(l); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"--cafile", certFile}, {"--tls", "--insecure"}} {
			res := runBenchAt(t, l.Addr().String(), append([]string{"conn", "-c", "5", "-d", "100ms"}, args...)...)
			if res.Connect.Succeeded != 5 {
				t.Errorf("%v: %d of 5 connected", args, res.Connect.Succeeded)
			}
		}
	})
}

// Connections that fail are errors: counted, and tern bench exits
// non-zero.
func TestBenchFailedConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	host, port, _ := net.SplitHostPort(addr)
	for _, asJSON := range []bool{false, true} {
		var out, errOut bytes.Buffer
		root := rootCmd()
		root.SetOut(&out)
		root.SetErr(&errOut)
		args := []string{"bench", "pairs", "-h", host, "-p", port, "-c", "3", "-d", "1s", "--drain", "0s", "--quiet"}
		if asJSON {
			args = append(args, "--json")
		}
		root.SetArgs(args)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), "6 errors, 6 of 6 connections failed") || !strings.Contains(err.Error(), "refused") {
			t.Errorf("json %v: error %v, want 6 failed connections", asJSON, err)
		}
		if asJSON {
			var res bench.Result
			if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Errors != 6 || res.Connect.Failed != 6 {
				t.Errorf("summary: %+v, %v", res, err)
			}
		} else if !strings.Contains(out.String(), "errors       6") {
			t.Errorf("summary:\n%s", out.String())
		}
	}
}

// Sizes take units, as everywhere else.
func TestBenchSizeUnits(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	if res := runBenchCLI(t, srv, "pub", "-c", "1", "-d", "200ms", "-s", "1KiB"); res.PayloadSize != 1024 {
		t.Errorf("-s 1KiB: payload size %d", res.PayloadSize)
	}
	var errOut bytes.Buffer
	root := rootCmd()
	root.SetOut(&errOut)
	root.SetErr(&errOut)
	root.SetArgs([]string{"bench", "pub", "-s", "lots"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), `"lots" is not a size`) {
		t.Errorf("-s lots: %v", err)
	}
}
