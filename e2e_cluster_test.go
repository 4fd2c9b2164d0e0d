package tern_test

// The end-to-end suites across nodes: TestE2EAcrossNodes runs every test of
// e2e_v5_test.go and e2e_v311_test.go against an in-process cluster of
// three nodes (package cluster, over embedded NATS), each client on the
// next node in turn, so that a test's subscriber and publisher are on
// different nodes (not with -short, nor with TERN_E2E_ACROSS=0).
// TERN_E2E_CLUSTER=1 runs the suites themselves that way. Only the tests
// do this: package tern never imports package cluster.

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/cluster"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/terntest"
)

// e2eNodes is the size of the cluster of a test across nodes.
const e2eNodes = 3

// e2eAcrossNodes reports whether t runs across nodes: under
// TestE2EAcrossNodes, or with TERN_E2E_CLUSTER set.
func e2eAcrossNodes(t testing.TB) bool {
	return os.Getenv("TERN_E2E_CLUSTER") != "" || strings.HasPrefix(t.Name(), "TestE2EAcrossNodes/")
}

// e2eCluster starts an in-process cluster whose nodes have the options o
// and the hooks, and waits until every node is ready and sees the others.
// A start that fails (a route port taken between FreeAddrs and the bind)
// is tried again on fresh ports.
func e2eCluster(t testing.TB, o *tern.Options, hooks []tern.Hook) *e2eBroker {
	t.Helper()
	if o.SysInterval == 0 {
		o.SysInterval = -1 // as terntest.NewServer
	}
	var nodes []*terntest.Server
	var cls []*cluster.Cluster
	for attempt := 1; ; attempt++ {
		var err error
		if nodes, cls, err = e2eTryCluster(t, o, hooks); err == nil {
			break
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("cluster start attempt %d: %v; retrying on fresh ports", attempt, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, cl := range cls {
		if err := cl.WaitReady(ctx); err != nil {
			t.Fatalf("node %s not ready: %v", cl.Node(), err)
		}
	}
	terntest.Eventually(t, "every node to see the others", func() bool {
		for _, cl := range cls {
			if !cl.Ready() {
				return false // fenced for a moment
			}
			alive := 0
			for _, n := range cl.Status().Nodes {
				if n.Alive {
					alive++
				}
			}
			if alive != len(cls) {
				return false
			}
		}
		return true
	})
	return &e2eBroker{Server: nodes[0], nodes: nodes}
}

// e2eTryCluster starts the nodes on fresh route ports; on an error it stops
// those it started.
func e2eTryCluster(t testing.TB, o *tern.Options, hooks []tern.Hook) ([]*terntest.Server, []*cluster.Cluster, error) {
	routes := terntest.FreeAddrs(t, e2eNodes)
	dir := t.TempDir()
	nodes := make([]*terntest.Server, e2eNodes)
	cls := make([]*cluster.Cluster, e2eNodes)
	errs := make([]error, e2eNodes)
	var wg sync.WaitGroup
	for i := range e2eNodes {
		wg.Go(func() {
			name := fmt.Sprintf("n%d", i+1)
			// The default lease and forward timeout: no node dies here, and
			// shorter ones fence a node whose heartbeats a loaded machine
			// delays.
			nodes[i], cls[i], errs[i] = e2eStartNode(*o, hooks, cluster.Options{Name: "e2e", Node: name,
				Listen: routes[i], Peers: routes, DataDir: filepath.Join(dir, name), DrainTime: 2 * time.Second,
				Logger: e2eLogger(name)})
		})
	}
	wg.Wait()
	stop := func() {
		var wg sync.WaitGroup
		for _, nd := range nodes {
			if nd != nil {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					nd.Shutdown(ctx)
				})
			}
		}
		wg.Wait()
	}
	if err := errors.Join(errs...); err != nil {
		stop()
		return nil, nil, err
	}
	t.Cleanup(stop)
	return nodes, cls, nil
}

// e2eStartNode starts one node, serving MQTT on a fresh loopback port.
func e2eStartNode(o tern.Options, hooks []tern.Hook, co cluster.Options) (*terntest.Server, *cluster.Cluster, error) {
	if os.Getenv("TERN_E2E_LOG") != "" {
		o.Logger = co.Logger
	}
	srv, err := tern.New(&o)
	if err != nil {
		return nil, nil, err
	}
	cl, ts, err := e2eServeNode(srv, hooks, co)
	if err != nil {
		srv.Close()
		return nil, nil, err
	}
	return ts, cl, nil
}

// e2eServeNode adds the hooks and the node co describes to srv, and serves
// it on a fresh loopback port.
func e2eServeNode(srv *tern.Server, hooks []tern.Hook, co cluster.Options) (*cluster.Cluster, *terntest.Server, error) {
	cl, err := cluster.New(srv, co)
	if err != nil {
		return nil, nil, err
	}
	for _, h := range append(slices.Clip(hooks), cl) {
		if err := srv.AddHook(h); err != nil {
			return nil, nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	if err := srv.AddListener(listeners.NewTCPFromListener("tcp", ln)); err != nil {
		ln.Close()
		return nil, nil, err
	}
	return cl, &terntest.Server{Server: srv, Addr: ln.Addr().String()}, srv.Serve()
}

// e2eLogger logs a node to stderr when TERN_E2E_LOG is set, and nothing
// otherwise.
func e2eLogger(node string) *slog.Logger {
	if os.Getenv("TERN_E2E_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", node)
}

// e2eSuite is every test of the end-to-end suites, as TestE2EAcrossNodes
// runs them.
var e2eSuite = []func(*testing.T){
	TestE2EV5SessionPresentAndResume, TestE2EV5SessionExpiry, TestE2EV5ReconnectDuringTeardown,
	TestE2EV5AssignedClientID, TestE2EV5SessionTakeover, TestE2EV5QoSMatrix, TestE2EV5OrderedQoS1,
	TestE2EV5Retransmission, TestE2EV5Retained, TestE2EV5RetainHandlingAndRAP, TestE2EV5RetainedMany,
	TestE2EV5Will, TestE2EV5WillDelay, TestE2EV5WillRetainAndQoS, TestE2EV5SharedRoundRobin,
	TestE2EV5SharedRedelivery, TestE2EV5OverlappingAndSubIDs, TestE2EV5NoLocal, TestE2EV5RequestResponse,
	TestE2EV5MessageExpiry, TestE2EV5Sys, TestE2EV5InProcess, TestE2EV5Hooks,

	TestE2EV311SessionPresentAndResume, TestE2EV311EmptyClientID, TestE2EV311SessionTakeover,
	TestE2EV311QoSMatrix, TestE2EV311OrderedQoS1, TestE2EV311Retransmission, TestE2EV311Retained,
	TestE2EV311RetainedMany, TestE2EV311Will, TestE2EV311Shared, TestE2EV311Overlapping, TestE2EV311Sys,
	TestE2EV311InProcess, TestE2EV311Hooks,
}

// Every test of the end-to-end suites, with publishers and subscribers on
// different nodes of a cluster (issue 14: any node serves any client).
func TestE2EAcrossNodes(t *testing.T) {
	if os.Getenv("TERN_E2E_CLUSTER") != "" {
		t.Skip("TERN_E2E_CLUSTER is set: the suites themselves run across nodes")
	}
	if testing.Short() || os.Getenv("TERN_E2E_ACROSS") == "0" {
		t.Skip("the e2e suites across cluster nodes (about 70 s) run without -short, unless TERN_E2E_ACROSS=0")
	}
	var listed []string
	for _, fn := range e2eSuite {
		name := runtime.FuncForPC(reflect.ValueOf(fn).Pointer()).Name()
		listed = append(listed, name[strings.LastIndexByte(name, '.')+1:])
	}
	if all := e2eSuiteNames(t); !slices.Equal(slices.Sorted(slices.Values(listed)), all) {
		t.Fatalf("e2eSuite lists %v, the suites have %v: keep it up to date", listed, all)
	}
	for i, fn := range e2eSuite {
		t.Run(strings.TrimPrefix(listed[i], "TestE2E"), func(t *testing.T) {
			// Parallel: a cluster takes 1-3 s to start, mostly waiting.
			t.Parallel()
			fn(t)
		})
	}
}

// e2eParallel marks t parallel, but under TestE2EAcrossNodes, which did
// already.
func e2eParallel(t *testing.T) {
	if !strings.HasPrefix(t.Name(), "TestE2EAcrossNodes/") {
		t.Parallel()
	}
}

// e2eSuiteNames returns the names of the tests in the suites' files,
// sorted.
func e2eSuiteNames(t *testing.T) []string {
	var names []string
	for _, f := range []string{"e2e_v5_test.go", "e2e_v311_test.go"} {
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && strings.HasPrefix(fd.Name.Name, "Test") {
				names = append(names, fd.Name.Name)
			}
		}
	}
	slices.Sort(names)
	return names
}
