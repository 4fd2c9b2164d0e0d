package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Handler returns the bridges' part of the admin API:
//
//	GET    /api/v1/bridges                   every bridge's Status (paged: page, limit)
//	GET    /api/v1/bridges/{name}            one bridge's Status
//	POST   /api/v1/bridges/{name}/reconnect  connect again now (202)
//	DELETE /api/v1/bridges/{name}/queue      drop the queue of a bridge no longer configured (204; 409 while it runs)
//
// Mount it on the admin server (admin.Server.Handle) for its
// authentication.
func (m *Manager) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/bridges", func(w http.ResponseWriter, r *http.Request) {
		all := m.Status()
		page, limit, ok := paging(w, r)
		if !ok {
			return
		}
		start := min((page-1)*limit, len(all))
		end := min(start+limit, len(all))
		writeJSON(w, http.StatusOK, map[string]any{"data": all[start:end],
			"meta": map[string]any{"page": page, "limit": limit, "count": len(all), "hasnext": end < len(all)}})
	})
	mux.HandleFunc("GET /api/v1/bridges/{name}", func(w http.ResponseWriter, r *http.Request) {
		b, ok := m.Bridge(r.PathValue("name"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such bridge"})
			return
		}
		writeJSON(w, http.StatusOK, b.Status())
	})
	mux.HandleFunc("POST /api/v1/bridges/{name}/reconnect", func(w http.ResponseWriter, r *http.Request) {
		if err := m.Reconnect(r.PathValue("name")); err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such bridge"})
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "reconnecting"})
	})
	mux.HandleFunc("DELETE /api/v1/bridges/{name}/queue", func(w http.ResponseWriter, r *http.Request) {
		switch err := m.DeleteQueue(r.PathValue("name")); {
		case err == nil:
			w.WriteHeader(http.StatusNoContent)
		case errors.Is(err, ErrRunning):
			writeJSON(w, http.StatusConflict, map[string]string{"error": "the bridge is configured and running: remove it from the configuration first"})
		case errors.Is(err, ErrNoBridge):
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no queue for that bridge"})
		default:
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		}
	})
	return mux
}

// paging reads page and limit as the admin API does (limit 1 to 1000,
// default 100).
func paging(w http.ResponseWriter, r *http.Request) (page, limit int, ok bool) {
	page, limit = 1, 100
	for _, p := range []struct {
		name string
		dst  *int
		max  int
	}{{"page", &page, 1 << 30}, {"limit", &limit, 1000}} {
		s := r.URL.Query().Get(p.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > p.max {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("%s: %q is not a whole number from 1 to %d", p.name, s, p.max)})
			return 0, 0, false
		}
		*p.dst = n
	}
	return page, limit, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
