package main

import (
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/config"
	"github.com/ternmq/tern/terntest"
)

// tern cluster status prints a clustered node's view (here a cluster of
// one, with no peers) and says so of a broker that is not clustered.
func TestClusterStatusCommand(t *testing.T) {
	cfg := testConfig(t)
	cfg.Cluster.Listen = terntest.FreeAddr(t)
	cfg.Cluster.Node = "c1"
	cfg.Cluster.LeaseTTL = config.Duration(3 * time.Second)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := startTest(t, cfg, nil, new(syncBuffer))
	terntest.Eventually(t, "the node ready", func() bool { return httpStatus(t, r.adminURL()+"/readyz") == 200 })
	out, err := runTernOutput(t, "", "cluster", "status", "--url", r.adminURL())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cluster tern, node c1: ready", "none (a cluster of one)", "c1    ready (this node)",
		"JetStream meta leader: c1", "KV_tern_sessions  c1", "tern_park         c1"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	out, err = runTernOutput(t, "", "cluster", "status", "--json", "--url", r.adminURL())
	if err != nil || !strings.Contains(out, `"clustered":true`) || !strings.Contains(out, `"state":"ready"`) ||
		!strings.Contains(out, `"meta_leader":"c1"`) {
		t.Errorf("--json: %v\n%s", err, out)
	}

	plain := startTest(t, testConfig(t), nil, new(syncBuffer))
	out, err = runTernOutput(t, "", "cluster", "status", "--url", plain.adminURL())
	if err != nil || !strings.Contains(out, "not clustered") {
		t.Errorf("not clustered: %v\n%s", err, out)
	}
}
