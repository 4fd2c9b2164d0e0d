package admin_test

// The dashboard in a real browser: headless Chromium driven through the
// DevTools protocol (chromedp) against an in-process broker. Skipped, with
// a message, where no Chromium is installed (.ci/run installs Debian's
// chromium). Every wait is for a condition in the page or the broker,
// bounded by browserTimeout; nothing waits for a time to pass.
//
// TERN_DASHBOARD_SCREENSHOTS=dir also writes a PNG of each page there
// (the README's pictures).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/hooks/trace"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// browserTimeout bounds each step in the browser.
const browserTimeout = 20 * time.Second

// chromiumPath returns the browser to drive, or "" when none is installed.
func chromiumPath() string {
	if p := os.Getenv("TERN_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell", "chromium-headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser is one headless Chromium tab, with the errors its pages report.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	errs []string
}

// chrome is the one Chromium process the tests share, each in a tab of
// its own; TestMain ends it.
var chrome struct {
	once   sync.Once
	ctx    context.Context // the browser's first tab, which keeps it running
	cancel func()
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if chrome.cancel != nil {
		chrome.cancel()
	}
	os.Exit(code)
}

// newBrowser opens a tab in the shared Chromium, started on first use.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Skip("no Chromium on PATH (apt-get install chromium, or set TERN_CHROMIUM): the dashboard's browser tests are skipped")
	}
	chrome.once.Do(func() {
		dir, err := os.MkdirTemp("", "dash-chromium-")
		if err != nil {
			chrome.err = err
			return
		}
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
			chromedp.WindowSize(1280, 860), chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(dir))
		actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancel := chromedp.NewContext(actx)
		chrome.ctx, chrome.cancel = ctx, func() { cancel(); cancelAlloc(); os.RemoveAll(dir) }
		// The first Run starts the browser, with no timeout (see chromedp.Run).
		chrome.err = chromedp.Do(ctx, chromedp.Navigate("about:blank"))
	})
	if chrome.err != nil {
		t.Fatalf("starting %s: %v", path, chrome.err)
	}
	b := &browser{}
	ctx, cancel := chromedp.NewContext(chrome.ctx, chromedp.WithListener(b.listen))
	t.Cleanup(cancel)
	b.ctx = ctx
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, log.Enable, cdp.Empty{})
		return err
	})); err != nil {
		t.Fatalf("a new tab: %v", err)
	}
	return b
}

// listen records the errors a page reports: uncaught exceptions,
// console.error and the browser's own log errors (a resource refused).
func (b *browser) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			msg = "console." + string(ev.Type) + ": " + strings.Join(parts, " ")
		}
	case *log.EventEntryAdded:
		// ERR_NETWORK_CHANGED: the browser saw the machine's interfaces
		// change (other jobs' network namespaces) and cut its requests in
		// flight; not the page's doing, and the waits on the DOM tell
		// whether the page still came up.
		if ev.Entry.Level == log.EntryLevelError && !strings.Contains(ev.Entry.Text, "net::ERR_NETWORK_CHANGED") {
			msg = "log: " + ev.Entry.Text + " " + ev.Entry.URL
		}
	}
	if msg != "" {
		b.mu.Lock()
		b.errs = append(b.errs, msg)
		b.mu.Unlock()
	}
}

// run runs actions, failing the test when they do not complete in
// browserTimeout.
func (b *browser) run(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			hctx, hcancel := context.WithTimeout(b.ctx, 2*time.Second)
			html, _ := chromedp.Run(hctx, chromedp.OuterHTML(chromedp.CSS("main")))
			hcancel()
			t.Fatalf("%s: not done in %v; page: %.3000s; errors: %v", what, browserTimeout, html, b.errors())
		}
		t.Fatalf("%s: %v; errors: %v", what, err, b.errors())
	}
}

// errors returns the errors reported so far and forgets them.
func (b *browser) errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.errs
	b.errs = nil
	return e
}

// noErrors fails the test if a page reported an error, but for those
// that contain one of the expected strings.
func (b *browser) noErrors(t *testing.T, page string, expected ...string) {
	t.Helper()
	var e []string
	for _, msg := range b.errors() {
		if !slices.ContainsFunc(expected, func(s string) bool { return strings.Contains(msg, s) }) {
			e = append(e, msg)
		}
	}
	if len(e) > 0 {
		t.Errorf("%s: the page reported errors: %q", page, e)
	}
}

// waitJS waits until a JavaScript expression is true in the page.
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond))
}

// eval evaluates a JavaScript expression in the page (awaiting a promise).
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// screenshot writes the page to TERN_DASHBOARD_SCREENSHOTS/name.png, if set.
func (b *browser) screenshot(t *testing.T, name string) {
	dir := os.Getenv("TERN_DASHBOARD_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, browserTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Error(err)
	}
}

// dashEnv is a broker with the trace hook and the dashboard.
func dashEnv(t *testing.T, aopts admin.Options) (*env, *trace.Tracer) {
	tr := trace.New(trace.Limits{})
	aopts.Tracer = tr
	return newEnv(t, nil, aopts, tr), tr
}

// The acceptance of issue 16, page by page, in one browser.
func TestDashboardInBrowser(t *testing.T) {
	e, tracer := dashEnv(t, admin.Options{})
	b := newBrowser(t) // closed first: its streams end before the admin server shuts down

	// Overview: N clients connected show within the stream's next samples.
	const n = 3
	var conns []*terntest.Conn
	for i := range n {
		c := e.ts.Dial(t, packets.V5)
		c.MustConnect(fmt.Sprintf("client-%d", i))
		conns = append(conns, c)
	}
	start := time.Now()
	b.run(t, "overview shows the clients",
		chromedp.Navigate(e.base+"/"),
		waitJS(fmt.Sprintf(`document.querySelector('[data-testid=card-connected-value]')?.textContent === '%d'`, n)))
	t.Logf("overview showed %d connected %v after navigating", n, time.Since(start).Round(time.Millisecond))
	loadMs := eval[float64](t, b, `performance.getEntriesByType('navigation')[0].loadEventEnd`)
	t.Logf("first load (navigation to load event): %.0f ms", loadMs)

	// The messages-in chart's last point is above 0 while a publisher runs.
	ctx, stop := context.WithCancel(context.Background())
	var pubs sync.WaitGroup
	pubs.Add(1)
	go func() {
		defer pubs.Done()
		tick := time.NewTicker(10 * time.Millisecond) // a steady publisher, stopped below
		defer tick.Stop()
		for i := 0; i < 100_000; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				e.ts.Publish("load/x", []byte("m"), false, 0)
			}
		}
	}()
	b.run(t, "messages chart moves",
		waitJS(`Number(document.querySelector('[data-testid=chart-messages] ')?.dataset.last) > 0`))
	stop()
	pubs.Wait()
	// The longer ranges come from the 10 s history.
	for _, r := range []string{"24h", "1h"} {
		b.run(t, "range "+r, chromedp.Evaluate[chromedp.Void](`(() => { const s = document.querySelector('[data-testid=range]');
			s.value = '`+r+`'; s.dispatchEvent(new Event('change', { bubbles: true })); })()`),
			waitJS(`document.querySelector('[data-testid=range]').value === '`+r+`' && document.querySelector('[data-testid=chart-messages] canvas') !== null`))
	}
	b.noErrors(t, "overview")

	// Clients: kicking one in the page disconnects it.
	victim := e.ts.Dial(t, packets.V5)
	victim.MustConnect("victim")
	b.run(t, "kick from the clients page",
		chromedp.Navigate(e.base+"/#/clients"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="kick-victim"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="kick-victim"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=confirm]`)))
	kicked := time.Now()
	b.run(t, "confirm the kick", chromedp.Click(chromedp.CSS(`[data-testid=confirm]`)))
	victim.ExpectClosed()
	t.Logf("the kicked client was disconnected %v after the click", time.Since(kicked).Round(time.Millisecond))
	terntest.Eventually(t, "the victim to be gone", func() bool { _, ok := e.ts.ClientInfo("victim"); return !ok })
	b.run(t, "the victim leaves the list", chromedp.Click(chromedp.CSS(`[data-testid=refresh]`)),
		waitJS(`!document.querySelector('[data-testid="kick-victim"]')`))
	b.screenshot(t, "clients")
	b.run(t, "search the clients", chromedp.SendKeys(chromedp.CSS(`[data-testid=client-search]`), "client-1"),
		waitJS(`document.querySelectorAll('[data-testid=clients-table] tbody tr').length === 1`),
		chromedp.Click(chromedp.CSS(`tr[data-client="client-1"] button.link`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=client-detail]`)))
	b.screenshot(t, "client-detail")
	b.noErrors(t, "clients")

	// Retained: deleting one in the page removes it from the API.
	if err := e.ts.Publish("r/keep", []byte(`{"a":1}`), true, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.ts.Publish("r/drop", []byte("bye"), true, 0); err != nil {
		t.Fatal(err)
	}
	b.run(t, "delete a retained message",
		chromedp.Navigate(e.base+"/#/retained"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="delete-r/drop"]`)),
		chromedp.Click(chromedp.CSS(`tr[data-topic="r/keep"] button.link`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=retained-view]`)),
		chromedp.Click(chromedp.CSS(`[data-testid=tab-json]`)),
		waitJS(`document.querySelector('[data-testid=payload]').textContent.includes('"a": 1')`),
		chromedp.Click(chromedp.CSS(`[data-testid=modal-close]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="delete-r/drop"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid=confirm]`)),
		waitJS(`!document.querySelector('[data-testid="delete-r/drop"]')`))
	var ret admin.Page[admin.Retained]
	e.getJSON(t, "GET", "/api/v1/retained", "", 200, &ret)
	if len(ret.Data) != 1 || ret.Data[0].Topic != "r/keep" {
		t.Errorf("retained after the delete: %+v", ret.Data)
	}
	b.noErrors(t, "retained")

	// Live trace: a trace on t/# shows a message published.
	b.run(t, "start a trace",
		chromedp.Navigate(e.base+"/#/trace"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid=trace-value]`), "t/#"),
		chromedp.Click(chromedp.CSS(`[data-testid=trace-start]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=trace-stop]`)))
	terntest.Eventually(t, "the trace to run", func() bool { return tracer.Stats().Active == 1 })
	traced := time.Now()
	if err := e.ts.Publish("t/hello", []byte("traced"), false, 0); err != nil {
		t.Fatal(err)
	}
	b.run(t, "the trace shows the message",
		waitJS(`[...document.querySelectorAll('[data-testid=trace-table] tr[data-type=publish]')].some((r) => r.textContent.includes('t/hello'))`))
	t.Logf("the trace showed the message %v after it was published", time.Since(traced).Round(time.Millisecond))
	b.screenshot(t, "trace")
	// A burst: what the trace's limits let through, the page keeps, and
	// shows the last maxRows (1,000) of.
	const burst = 1500
	for i := range burst {
		e.ts.Publish(fmt.Sprintf("t/burst/%d", i), []byte("x"), false, 0)
	}
	b.run(t, "the burst is counted",
		waitJS(fmt.Sprintf(`(() => { const c = document.querySelector('[data-testid=trace-count]');
			return Number(c.dataset.events) + Number(c.dataset.dropped) >= %d; })()`, burst+1)))
	if rows := eval[int](t, b, `document.querySelectorAll('[data-testid=trace-table] tbody tr').length`); rows > 1000 {
		t.Errorf("the trace shows %d rows", rows)
	}
	b.run(t, "stop the trace", chromedp.Click(chromedp.CSS(`[data-testid=trace-stop]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=trace-start]`)))
	terntest.Eventually(t, "the trace to stop", func() bool { return tracer.Stats().Active == 0 })
	b.noErrors(t, "trace")

	// Publish from the page.
	got := make(chan *tern.Message, 1)
	if err := e.ts.Subscribe("p/#", 1, func(m *tern.Message) {
		select {
		case got <- m:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	b.run(t, "publish",
		chromedp.Navigate(e.base+"/#/publish"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid=pub-topic]`), "p/1"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid=pub-payload]`), "from the page"),
		chromedp.Click(chromedp.CSS(`[data-testid=pub-send]`)),
		chromedp.WaitVisible(chromedp.CSS(`.notice.ok`)))
	select {
	case m := <-got:
		if m.Topic != "p/1" || string(m.Payload) != "from the page" {
			t.Errorf("published %q %q", m.Topic, m.Payload)
		}
	case <-time.After(terntest.Timeout):
		t.Error("the page's message did not come")
	}
	b.noErrors(t, "publish")

	// The other pages load, without errors.
	subscribe(t, conns[0], packets.Subscription{Filter: "a/b/#", QoS: 1}, packets.Subscription{Filter: "$share/g/s/+"})
	for _, p := range []struct{ page, ready string }{
		{"subscriptions", `[data-testid=filters-table] tbody tr`},
		{"topics", `[data-path="a"]`},
		{"listeners", `[data-testid=listeners-table] tbody tr`},
		{"cluster", `[data-testid=nodes-table] tbody tr`},
	} {
		b.run(t, p.page, chromedp.Navigate(e.base+"/#/"+p.page), chromedp.WaitVisible(chromedp.CSS(p.ready)))
		b.screenshot(t, p.page)
		b.noErrors(t, p.page)
	}
	b.run(t, "shared groups", chromedp.Navigate(e.base+"/#/subscriptions"), chromedp.Click(chromedp.CSS(`[data-testid=tab-shared]`)),
		waitJS(`document.querySelector('[data-testid=shared-table] tbody')?.textContent.includes('client-0')`))
	b.run(t, "open the topic tree", chromedp.Navigate(e.base+"/#/topics"),
		chromedp.Click(chromedp.CSS(`[data-path="a"] button.toggle`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-path="a/b"]`)))
	b.noErrors(t, "subscriptions and topics")
	// The overview again, with what the test did in its charts.
	b.run(t, "overview at the end", chromedp.Navigate(e.base+"/"),
		waitJS(`Number(document.querySelector('[data-testid=card-retained-value]')?.textContent) === 1`))
	b.screenshot(t, "overview")
	b.noErrors(t, "overview at the end")
}

// Without credentials, on an admin API that has some, the page shows the
// login, every API call answers 401, and the token logs in.
func TestDashboardLogin(t *testing.T) {
	const token = "a-token-for-the-dashboard-test"
	e, _ := dashEnv(t, admin.Options{Tokens: []string{token}, APIKeys: map[string]string{"ops": "the-secret-of-ops"}})
	b := newBrowser(t)
	for _, p := range []string{"/api/v1/stats", "/api/v1/clients", "/api/v1/sessions", "/api/v1/metrics/history",
		"/api/v1/metrics/stream", "/api/v1/trace?topic=x", "/api/v1/retained", "/api/v1/topics", "/api/v1/listeners",
		"/api/v1/config", "/api/v1/cluster", "/api/v1/subscriptions/filters", "/api/v1/subscriptions/shared",
		"/api/v1/subscriptions?filter=x", "/api/v1/clients/x", "/api/v1/sessions/x", "/api/v1/retained/x"} {
		if code, _, _ := e.do(t, "GET", p, ""); code != 401 {
			t.Errorf("GET %s without credentials: %d", p, code)
		}
	}
	for _, r := range [][3]string{{"POST", "/api/v1/publish", `{"topic":"x","payload":"y"}`},
		{"POST", "/api/v1/clients/disconnect", `{"client_ids":["x"]}`}, {"POST", "/api/v1/sessions/delete", `{"client_ids":["x"]}`},
		{"DELETE", "/api/v1/retained?filter=%23", ""}, {"DELETE", "/api/v1/clients/x", ""}} {
		if code, _, _ := e.do(t, r[0], r[1], r[2]); code != 401 {
			t.Errorf("%s %s without credentials: %d", r[0], r[1], code)
		}
	}
	b.run(t, "the login page",
		chromedp.Navigate(e.base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=login]`)))
	if status := eval[int](t, b, `fetch('api/v1/sessions').then((r) => r.status)`); status != 401 {
		t.Errorf("the page's call without credentials: %d", status)
	}
	b.screenshot(t, "login")
	b.run(t, "log in",
		chromedp.SendKeys(chromedp.CSS(`[data-testid=login-secret]`), token),
		chromedp.Click(chromedp.CSS(`[data-testid=login] button[type=submit]`)),
		waitJS(`document.querySelector('[data-testid=card-connected-value]')?.textContent === '0'`))
	stored, cookie := eval[string](t, b, `sessionStorage.getItem('tern.authorization')`), eval[string](t, b, `document.cookie`)
	if stored != "Bearer "+token || cookie != "" {
		t.Errorf("sessionStorage holds %q, cookies %q", stored, cookie)
	}
	// Out, and in again with an API key (HTTP Basic).
	b.run(t, "log out and in with a key",
		chromedp.Click(chromedp.CSS(`[data-testid=logout]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=login]`)),
		chromedp.Click(chromedp.CSS(`[data-testid=login-kind-key]`)),
		chromedp.SendKeys(chromedp.CSS(`[data-testid=login-key]`), "ops"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid=login-secret]`), "the-secret-of-ops"),
		chromedp.Click(chromedp.CSS(`[data-testid=login] button[type=submit]`)),
		waitJS(`document.querySelector('[data-testid=card-connected-value]')?.textContent === '0'`))
	if stored := eval[string](t, b, `sessionStorage.getItem('tern.authorization')`); !strings.HasPrefix(stored, "Basic ") {
		t.Errorf("sessionStorage holds %q", stored)
	}
	// The calls refused before the login are logged as errors: expected.
	b.noErrors(t, "login", "401 (Unauthorized)")
}
