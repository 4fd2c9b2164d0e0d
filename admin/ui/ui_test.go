package ui

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// The vendored files are the released ones: their SHA-256 is the one
// VERSIONS gives (see its header for how to update one), and every file
// in vendor/ is listed.
func TestVendoredFilesMatchVersions(t *testing.T) {
	list, err := static.ReadFile("static/vendor/VERSIONS")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{"VERSIONS": true}
	sc := bufio.NewScanner(bytes.NewReader(list))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 6 {
			t.Fatalf("VERSIONS: %q: want file, name, version, licence, package path, sha256", line)
		}
		body, err := static.ReadFile("static/vendor/" + f[0])
		if err != nil {
			t.Errorf("VERSIONS lists %s: %v", f[0], err)
			continue
		}
		sum := sha256.Sum256(body)
		if got := hex.EncodeToString(sum[:]); got != f[5] {
			t.Errorf("%s (%s %s): sha256 %s, VERSIONS says %s", f[0], f[1], f[2], got, f[5])
		}
		listed[f[0]] = true
	}
	entries, err := static.ReadDir("static/vendor")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !listed[e.Name()] {
			t.Errorf("vendor/%s is not in VERSIONS", e.Name())
		}
	}
}

// All the files together stay within the budget of issue 16: 150 KB
// compressed with gzip.
func TestSizeBudget(t *testing.T) {
	const budget = 150_000
	raw, gz := 0, 0
	for name, s := range New().Files() {
		raw += s[0]
		gz += s[1]
		t.Logf("%-28s %7d B, gzip %6d B", name, s[0], s[1])
	}
	t.Logf("all: %d B, gzip %d B (budget %d)", raw, gz, budget)
	if gz > budget {
		t.Errorf("the dashboard's files take %d B gzipped, over the budget of %d", gz, budget)
	}
}

// No inline script or style, and no handler attributes: the
// Content-Security-Policy allows none, and the files must not need it.
func TestNoInlineScriptOrStyle(t *testing.T) {
	page, _ := static.ReadFile("static/index.html")
	inline := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|<style|\sstyle=|\son[a-z]+=`)
	if m := inline.Find(page); m != nil {
		t.Errorf("index.html has inline script or style: %q", m)
	}
	for _, src := range regexp.MustCompile(`<script[^>]*>`).FindAll(page, -1) {
		if !bytes.Contains(src, []byte(`src="ui/`)) {
			t.Errorf("index.html: %s loads no file of the dashboard", src)
		}
	}
}

// index.html preloads every module of the shell (a page's own module
// comes when the page is shown), so that the browser fetches them at once
// rather than one level of imports after another.
func TestIndexPreloadsTheShell(t *testing.T) {
	page, _ := static.ReadFile("static/index.html")
	for name := range New().Files() {
		if (strings.HasSuffix(name, ".js") || strings.HasSuffix(name, ".mjs")) && name != "js/app.js" && name != "vendor/uPlot.iife.min.js" &&
			!strings.HasPrefix(name, "js/pages/") &&
			!bytes.Contains(page, []byte(`<link rel="modulepreload" href="ui/`+name+`">`)) {
			t.Errorf("index.html does not preload %s", name)
		}
	}
}

func get(t *testing.T, h http.Handler, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// Files come with a strong ETag, and 304 when it matches; gzip when
// asked, with an ETag of its own.
func TestServeETagAndGzip(t *testing.T) {
	h := New()
	rec := get(t, h, "/")
	tag := rec.Header().Get("ETag")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `ui/js/app.js`) || rec.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("/: %d %q", rec.Code, rec.Header())
	}
	if !strings.HasPrefix(tag, `"`) || strings.HasPrefix(tag, "W/") {
		t.Errorf("ETag %q is not strong", tag)
	}
	if rec := get(t, h, "/", "If-None-Match", tag); rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Errorf("If-None-Match: %d", rec.Code)
	}
	rec = get(t, h, "/ui/vendor/preact.mjs", "Accept-Encoding", "gzip")
	if rec.Header().Get("Content-Encoding") != "gzip" || rec.Header().Get("ETag") == tag || rec.Header().Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Fatalf("gzip: %q", rec.Header())
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(zr)
	want, _ := static.ReadFile("static/vendor/preact.mjs")
	if !bytes.Equal(body, want) {
		t.Error("gzip: not the file")
	}
	// The hooks import Preact by a bare name, which the browser resolves
	// only through an import map (an inline script): rewritten.
	if b := get(t, h, "/ui/vendor/hooks.mjs").Body.String(); strings.Contains(b, `from"preact"`) || !strings.Contains(b, `from"./preact.mjs"`) {
		t.Error("hooks.mjs: import not rewritten")
	}
	for _, p := range []string{"/ui/", "/ui/nothing.js", "/index.html", "/ui/../admin.go"} {
		if rec := get(t, h, p); rec.Code != http.StatusNotFound {
			t.Errorf("%s: %d", p, rec.Code)
		}
	}
}

// BenchmarkFirstLoad is the server's part of a first load: the page and
// every file it names, gzipped, as a browser with an empty cache asks.
//
//	go test -run X -bench FirstLoad ./admin/ui/
func BenchmarkFirstLoad(b *testing.B) {
	h := New()
	page, _ := static.ReadFile("static/index.html")
	paths := []string{"/", "/ui/js/pages/overview.js"}
	for _, m := range regexp.MustCompile(`(?:href|src)="(ui/[^"]+)"`).FindAllSubmatch(page, -1) {
		paths = append(paths, "/"+string(m[1]))
	}
	reqs := make([]*http.Request, len(paths))
	for i, p := range paths {
		reqs[i] = httptest.NewRequest("GET", p, nil)
		reqs[i].Header.Set("Accept-Encoding", "gzip, deflate, br")
	}
	sent := 0
	for b.Loop() {
		sent = 0
		for _, req := range reqs {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("%s: %d", req.URL, rec.Code)
			}
			sent += rec.Body.Len()
		}
	}
	b.ReportMetric(float64(len(reqs)), "files")
	b.ReportMetric(float64(sent), "bytes")
}
