package main

import (
	"bytes"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/ternmq/tern/bench"
	"github.com/ternmq/tern/terntest"
)

// runBenchCLI runs "tern bench ARGS --json --quiet" against srv and decodes
// the summary.
func runBenchCLI(t *testing.T, srv *terntest.Server, args ...string) *bench.Result {
	t.Helper()
	host, port, err := net.SplitHostPort(srv.Addr)
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
