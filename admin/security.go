package admin

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// hostCheck decides which Host headers the API answers to. A web page
// that reaches the API through DNS rebinding (its own name made to resolve
// to 127.0.0.1) sends its own name as Host; the API answers only to
// "localhost", IP addresses (which no web page other than the API's own
// can send, its origin being the address itself) and the names allowed.
type hostCheck struct {
	any   bool
	names map[string]bool
}

func (h *hostCheck) init(allowed []string) {
	h.names = make(map[string]bool)
	for _, n := range allowed {
		n = normalHost(n)
		if n == "*" {
			h.any = true
		}
		h.names[n] = true
	}
}

// normalHost returns a Host header's or a name's host part, without port,
// brackets or final dot, in lower case.
func normalHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

func (h *hostCheck) allowed(host string) bool {
	if host == "" || h.any { // no Host: not a browser (HTTP/1.0)
		return true
	}
	name := normalHost(host)
	if name == "localhost" || strings.HasSuffix(name, ".localhost") || h.names[name] {
		return true
	}
	_, err := netip.ParseAddr(name)
	return err == nil
}

// mutating reports whether a request method changes something.
func mutating(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// admit applies the checks that keep web pages out to every request, and
// answers CORS preflight requests; it reports whether the request goes on.
func (a *Server) admit(w http.ResponseWriter, r *http.Request) bool {
	if !a.hosts.allowed(r.Host) {
		writeError(w, http.StatusMisdirectedRequest, fmt.Sprintf(
			"host %q is not a name this admin API answers to; add it to admin.allowed_hosts", normalHost(r.Host)))
		return false
	}
	if origin := r.Header.Get("Origin"); origin != "" && !sameOrigin(origin, r.Host) {
		if !a.origins[strings.TrimSuffix(strings.ToLower(origin), "/")] {
			writeError(w, http.StatusForbidden, fmt.Sprintf("requests from the web origin %s are refused (admin.cors_origins)", origin))
			return false
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return false
		}
	} else if origin == "" && r.Header.Get("Sec-Fetch-Site") == "cross-site" && mutating(r.Method) {
		writeError(w, http.StatusForbidden, "cross-site request refused")
		return false
	}
	return true
}

// admitBody refuses a request that changes something and whose body a web
// page could have made a browser send to another site without asking: a
// form or text/plain. JSON it cannot, without the CORS permission the API
// does not give, nor a bearer token. A DELETE has no body, and a browser
// asks before sending one across sites.
func admitBody(w http.ResponseWriter, r *http.Request) bool {
	if !mutating(r.Method) || r.Method == http.MethodDelete || jsonBody(r) {
		return true
	}
	if _, ok := bearer(r); ok {
		return true
	}
	writeError(w, http.StatusUnsupportedMediaType,
		"a request that changes something must send Content-Type: application/json (or carry a bearer token)")
	return false
}

// sameOrigin reports whether a request's Origin is the API's own, the
// origin of a page the API served.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, host)
}

// jsonBody reports whether the request says its body is JSON.
func jsonBody(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}
