package admin

// The web dashboard (package admin/ui), at / and /ui/ unless
// Options.DisableDashboard:
//
//	GET /        the dashboard's page
//	GET /ui/...  its scripts, styles and vendored libraries
//
// Its files are public (they hold no data: a page that is not logged in
// shows the login form); every call they make goes to /api/v1 with the
// credentials the login took. Every answer of the admin interface, the
// API's included, carries the headers of securityHeaders.

import (
	"net/http"

	"github.com/ternmq/tern/admin/ui"
)

// contentSecurityPolicy allows the dashboard its own files and calls,
// and nothing else: no inline script or style, no other origin, no
// framing, no form posted elsewhere.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// securityHeaders sets the headers every answer carries.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// dashboardPatterns are the dashboard's routes, public like the probes.
var dashboardPatterns = map[string]bool{"GET /{$}": true, "GET /ui/": true}

func (a *Server) dashboardRoutes() {
	if a.opts.DisableDashboard {
		return
	}
	h := ui.New()
	for p := range dashboardPatterns {
		a.mux.Handle(p, h)
	}
}
