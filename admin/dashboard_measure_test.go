package admin_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/heapprofiler"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/packets"
)

// cdpCall runs one DevTools command in the browser's tab.
func cdpCall[P, R any](t *testing.T, b *browser, cmd cdp.Command[P, R], p P) R {
	t.Helper()
	var out R
	b.run(t, cmd.Method, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		var err error
		out, err = cdp.Call(ctx, tg, cmd, p)
		return err
	}))
	return out
}

// The budgets of issue 16 that take a browser: the first load of the
// dashboard (cold cache, loopback) and the JS heap after
// TERN_DASHBOARD_SOAK (10m for the figure) on the overview while
// messages flow. Only when TERN_DASHBOARD_SOAK is set; the figures go to
// BENCHMARKS.md.
//
//	TERN_DASHBOARD_SOAK=10m go test -run DashboardBudgets -v -timeout 20m ./admin/
func TestDashboardBudgets(t *testing.T) {
	soak, err := time.ParseDuration(os.Getenv("TERN_DASHBOARD_SOAK"))
	if err != nil {
		t.Skip("TERN_DASHBOARD_SOAK is not a duration: the budget measurements are skipped")
	}
	e, _ := dashEnv(t, admin.Options{})
	b := newBrowser(t)
	b.run(t, "warm up", chromedp.Navigate("about:blank"))
	cdpCall(t, b, network.Enable, network.EnableParams{})
	cdpCall(t, b, network.SetCacheDisabled, network.SetCacheDisabledParams{CacheDisabled: true})
	for i := range 5 {
		// A baseline: one small text file, what the browser takes for any page here.
		b.run(t, "baseline", chromedp.Navigate(e.base+"/ui/vendor/VERSIONS"))
		base := eval[float64](t, b, `performance.getEntriesByType('navigation')[0].loadEventEnd`)
		b.run(t, "blank", chromedp.Navigate("about:blank"))
		start := time.Now()
		b.run(t, "load", chromedp.Navigate(e.base+"/#/clients"),
			waitJS(`document.querySelector('[data-testid=clients-table]') !== null`))
		nav := eval[map[string]float64](t, b, `(() => { const n = performance.getEntriesByType('navigation')[0];
			return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd, resources: performance.getEntriesByType('resource').length}; })()`)
		t.Logf("load %d (cold cache): DOMContentLoaded %.0f ms, load event %.0f ms, %v resources; clients table shown after %v; a text file alone: %.0f ms",
			i, nav["dcl"], nav["load"], nav["resources"], time.Since(start).Round(time.Millisecond), base)
		if os.Getenv("TERN_DASHBOARD_TIMINGS") != "" {
			t.Log(eval[string](t, b, `performance.getEntriesByType('resource').map((r) => r.name.replace(location.origin, '') + ' ' +
				Math.round(r.startTime) + '+' + Math.round(r.requestStart - r.startTime) + '+' + Math.round(r.responseStart - r.requestStart) + '+' + Math.round(r.responseEnd - r.responseStart)).join('\n')`))
		}
		b.run(t, "leave", chromedp.Navigate("about:blank"))
	}
	cdpCall(t, b, network.SetCacheDisabled, network.SetCacheDisabledParams{CacheDisabled: false})

	// The overview, open while a publisher and 20 clients run.
	for range 20 {
		c := e.ts.Dial(t, packets.V5)
		c.MustConnect("c" + time.Now().Format("150405.000000"))
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				e.ts.Publish("load/x", []byte("soak"), false, 0)
			}
		}
	}()
	defer func() { stop(); wg.Wait() }()
	b.run(t, "overview", chromedp.Navigate(e.base+"/"), waitJS(`Number(document.querySelector('[data-testid=chart-messages]')?.dataset.last) > 0`))
	heap := func(what string) float64 {
		cdpCall(t, b, heapprofiler.CollectGarbage, cdp.Empty{})
		h := cdpCall(t, b, runtime.GetHeapUsage, cdp.Empty{})
		t.Logf("%s: JS heap used %.1f MB of %.1f MB", what, h.UsedSize/1e6, h.TotalSize/1e6)
		return h.UsedSize
	}
	heap("overview open")
	deadline := time.Now().Add(soak)
	for time.Now().Before(deadline) {
		time.Sleep(min(time.Minute, time.Until(deadline))) // a soak: the time passing is the test
		heap("after " + (soak - time.Until(deadline)).Round(time.Second).String())
	}
	if used := heap("end"); used > 50e6 {
		t.Errorf("JS heap %.1f MB after %v on the overview: over the budget of 50 MB", used/1e6, soak)
	}
}
