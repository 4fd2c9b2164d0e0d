package admin_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/terntest"
)

// BenchmarkSessionListing is the server time of one page of the Clients
// page at 100,000 sessions (issue 16: at most 100 ms), by query. The
// sessions are imported offline (tern.Server.ImportSession), each with a
// user name and a subscription.
//
//	go test -run X -bench SessionListing -benchtime 20x ./admin/
func BenchmarkSessionListing(b *testing.B) {
	const n = 100_000
	ts := terntest.NewServer(b, nil)
	for i := range n {
		id := fmt.Sprintf("sensor-%06d", i)
		st := &tern.SessionState{Session: storage.Session{ClientID: id, Version: 5, Expiry: 0xFFFFFFFF, Username: fmt.Sprintf("user-%d", i%1000)},
			Subscriptions: []storage.Subscription{{Filter: "cmd/" + id, QoS: 1}}}
		if err := ts.ImportSession(st); err != nil {
			b.Fatal(err)
		}
	}
	a := admin.New(ts.Server, admin.Options{Logger: slog.New(slog.DiscardHandler)})
	for _, q := range []string{
		"limit=50",
		"limit=50&search=sensor-09",
		"limit=50&search=user-99&search_by=username",
		"limit=50&state=offline&protocol=5",
		"limit=50&sort=queued",
		"limit=50&sort=connected_at&order=asc",
		"limit=50&page=1000",
		"limit=50&after=MABzZW5zb3ItMDUwMDAw", // after sensor-050000
	} {
		b.Run(q, func(b *testing.B) {
			req := httptest.NewRequest("GET", "http://127.0.0.1/api/v1/sessions?"+q, nil)
			for b.Loop() {
				rec := httptest.NewRecorder()
				a.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
