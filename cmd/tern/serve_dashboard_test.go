package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// tern serve serves the dashboard at / (admin.dashboard), the trace
// (the trace hook is added) and the configuration with its secrets
// hidden; --admin-dashboard=false turns the dashboard off.
func TestServeDashboard(t *testing.T) {
	cfg := testConfig(t)
	cfg.Persistence.Durability = "off"
	cfg.Admin.Listen = freePort(t)
	cfg.Admin.Token = "a-token-of-the-dashboard-test"
	b, err := startBroker(cfg, nil, new(syncBuffer))
	if err != nil {
		t.Fatal(err)
	}
	defer b.shutdown(nil, func(int) {})
	base := "http://" + cfg.Admin.Listen
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+cfg.Admin.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Header
	}
	if code, body, h := get("/"); code != 200 || !strings.Contains(body, "ui/js/app.js") || h.Get("Content-Security-Policy") == "" {
		t.Errorf("/: %d %q", code, h)
	}
	code, body, _ := get("/api/v1/config")
	if code != 200 || !strings.Contains(body, "token: <redacted>") || strings.Contains(body, cfg.Admin.Token) || !strings.Contains(body, "dashboard: true") {
		t.Errorf("/api/v1/config: %d\n%s", code, body)
	}

	// The trace hook is there: a trace of a topic answers with its stream.
	req, _ := http.NewRequest("GET", base+"/api/v1/trace?topic=x/%23&format=jsonl", nil)
	req.Header.Set("Authorization", "Bearer "+cfg.Admin.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // ends the trace
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("trace: %d %q", resp.StatusCode, resp.Header)
	}

	cfg2 := testConfig(t)
	cfg2.Persistence.Durability = "off"
	cfg2.Admin.Listen = freePort(t)
	cfg2.Admin.Dashboard = false
	b2, err := startBroker(cfg2, nil, new(syncBuffer))
	if err != nil {
		t.Fatal(err)
	}
	defer b2.shutdown(nil, func(int) {})
	if code := httpStatus(t, "http://"+cfg2.Admin.Listen+"/"); code != 404 {
		t.Errorf("/ with admin.dashboard false: %d", code)
	}
}
