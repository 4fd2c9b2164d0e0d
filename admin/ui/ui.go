// Package ui is Tern's web dashboard: static files (HTML, CSS, plain ES
// modules and a few vendored libraries listed in static/vendor/VERSIONS)
// embedded in the binary, which package admin serves at / and /ui/.
// Nothing is built: the files are served as they are written, but for the
// one rewrite an import map would do (see rewrites), since the dashboard's
// Content-Security-Policy allows no inline script, and an import map is
// one.
//
// Files are served with a strong ETag (their SHA-256) and Cache-Control:
// no-cache, so a browser asks again each time and gets 304 Not Modified
// until Tern is upgraded; gzip when the browser accepts it.
package ui

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
)

//go:embed static
var static embed.FS

// rewrites resolve the bare module specifiers of vendored files, as an
// import map would: file -> {what, with what}.
var rewrites = map[string][2]string{
	"vendor/hooks.mjs": {`from"preact"`, `from"./preact.mjs"`},
}

// Handler serves the dashboard: "/" is its page, "/ui/..." its files.
type Handler struct {
	files map[string]*file // by path below static/
}

// file is one file as served.
type file struct {
	body  []byte
	ctype string
	etag  string

	gzOnce sync.Once
	gz     []byte
	gzTag  string
}

// contentTypes by extension; a module script must come as JavaScript.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// New returns the dashboard's handler. It panics if the embedded files
// are not as this package expects (a test checks they are).
func New() *Handler {
	h := &Handler{files: make(map[string]*file)}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		if rw, ok := rewrites[name]; ok {
			if !bytes.Contains(body, []byte(rw[0])) {
				panic("ui: " + name + " lacks " + rw[0])
			}
			body = bytes.ReplaceAll(body, []byte(rw[0]), []byte(rw[1]))
		}
		ctype, ok := contentTypes[path.Ext(name)]
		if !ok {
			ctype = "text/plain; charset=utf-8" // VERSIONS, the licences
		}
		h.files[name] = &file{body: body, ctype: ctype, etag: etag(body, "")}
		return nil
	})
	if err != nil {
		panic("ui: " + err.Error())
	}
	return h
}

func etag(body []byte, suffix string) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + suffix + `"`
}

// gzipped returns the file compressed, made on first use.
func (f *file) gzipped() ([]byte, string) {
	f.gzOnce.Do(func() {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		zw.Write(f.body)
		zw.Close()
		if b.Len() < len(f.body) {
			f.gz, f.gzTag = b.Bytes(), etag(f.body, ".gz")
		}
	})
	return f.gz, f.gzTag
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutPrefix(r.URL.Path, "/ui/")
	if r.URL.Path == "/" {
		name, ok = "index.html", true
	}
	f := h.files[name]
	if !ok || f == nil || r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.NotFound(w, r)
		return
	}
	body, tag := f.body, f.etag
	hd := w.Header()
	hd.Add("Vary", "Accept-Encoding")
	if AcceptsGzip(r.Header.Get("Accept-Encoding")) {
		if gz, gzTag := f.gzipped(); gz != nil {
			body, tag = gz, gzTag
			hd.Set("Content-Encoding", "gzip")
		}
	}
	hd.Set("Content-Type", f.ctype)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", tag)
	if matches(r.Header.Get("If-None-Match"), tag) {
		hd.Del("Content-Encoding")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(body)
}

// matches reports whether an If-None-Match header names tag (or is "*").
func matches(header, tag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == tag || t == "*" {
			return true
		}
	}
	return false
}

// AcceptsGzip reports whether an Accept-Encoding header lists gzip with
// a weight above 0.
func AcceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q=")
		if !ok {
			return true
		}
		w, err := strconv.ParseFloat(q, 64)
		return err == nil && w > 0
	}
	return false
}

// Files returns the paths (below /ui/) and sizes of the files served, and
// their size compressed with gzip -9, for the size budget.
func (h *Handler) Files() map[string][2]int {
	out := make(map[string][2]int, len(h.files))
	for name, f := range h.files {
		gz, _ := f.gzipped()
		n := len(gz)
		if gz == nil {
			n = len(f.body)
		}
		out[name] = [2]int{len(f.body), n}
	}
	return out
}
