package admin

// The ban list's endpoints:
//
//	GET    /api/v1/bans               bans in force (paged; ?as=clientid|username|address)
//	POST   /api/v1/bans               add one: {"as", "who", "reason", "until" | "duration"}
//	DELETE /api/v1/bans/{as}/{who...} lift one (an address range's "/" is part of who)

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Bans is the ban list behind /api/v1/bans (tern serve adapts
// hooks/ban's List to it). Add and Delete return errors wrapping
// ErrInvalidBan for requests that are wrong, others for failures.
type Bans interface {
	List() []Ban
	Add(Ban) (Ban, error)
	Delete(as, who string) (bool, error)
}

// ErrInvalidBan marks a ban request that is wrong: answered 400.
var ErrInvalidBan = errors.New("admin: invalid ban")

// Ban is a ban as the API shows it.
type Ban struct {
	As     string     `json:"as"`  // clientid, username or address
	Who    string     `json:"who"` // the client id, user name, IP or CIDR range
	Reason string     `json:"reason,omitempty"`
	By     string     `json:"by,omitempty"` // admin, flapping, ...
	At     time.Time  `json:"at"`
	Until  *time.Time `json:"until,omitempty"` // absent: for ever
}

// BanRequest is the body of POST /api/v1/bans. Until (RFC 3339) or
// Duration ("90m", "12h", "7d") bound the ban; neither bans for ever.
type BanRequest struct {
	As       string `json:"as"`
	Who      string `json:"who"`
	Reason   string `json:"reason"`
	Until    string `json:"until"`
	Duration string `json:"duration"`
}

// ServeBans serves the ban list at /api/v1/bans, for a list made after
// New (tern serve makes it once the broker exists); Options.Bans does the
// same at New. Call it once.
func (a *Server) ServeBans(b Bans) {
	a.bans = b
	a.banRoutes()
}

func (a *Server) banRoutes() {
	if a.bans == nil {
		return
	}
	a.mux.HandleFunc("GET /api/v1/bans", a.listBans)
	a.mux.HandleFunc("POST /api/v1/bans", a.addBan)
	a.mux.HandleFunc("DELETE /api/v1/bans/{as}/{who...}", a.deleteBan)
}

func (a *Server) listBans(w http.ResponseWriter, r *http.Request) {
	bans := a.bans.List()
	if as := r.URL.Query().Get("as"); as != "" {
		out := bans[:0]
		for _, b := range bans {
			if b.As == as {
				out = append(out, b)
			}
		}
		bans = out
	}
	paginate(w, r, bans)
}

func (a *Server) addBan(w http.ResponseWriter, r *http.Request) {
	var req BanRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "body: more than one JSON value")
		return
	}
	b := Ban{As: req.As, Who: req.Who, Reason: req.Reason, By: "admin"}
	switch {
	case req.Who == "":
		writeError(w, http.StatusBadRequest, "who: required")
		return
	case req.Until != "" && req.Duration != "":
		writeError(w, http.StatusBadRequest, "give until or duration, not both")
		return
	case req.Until != "":
		t, err := time.Parse(time.RFC3339, req.Until)
		if err != nil {
			writeError(w, http.StatusBadRequest, "until: not an RFC 3339 time: "+err.Error())
			return
		}
		b.Until = &t
	case req.Duration != "":
		d, err := ParseBanDuration(req.Duration)
		if err != nil {
			writeError(w, http.StatusBadRequest, "duration: "+err.Error())
			return
		}
		t := time.Now().Add(d)
		b.Until = &t
	}
	got, err := a.bans.Add(b)
	switch {
	case errors.Is(err, ErrInvalidBan):
		writeError(w, http.StatusBadRequest, err.Error())
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		a.logChange(r, "ban added", "as", got.As, "who", got.Who, "reason", got.Reason)
		writeJSON(w, http.StatusCreated, got)
	}
}

func (a *Server) deleteBan(w http.ResponseWriter, r *http.Request) {
	ok, err := a.bans.Delete(r.PathValue("as"), r.PathValue("who"))
	switch {
	case errors.Is(err, ErrInvalidBan):
		writeError(w, http.StatusBadRequest, err.Error())
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	case !ok:
		writeError(w, http.StatusNotFound, "no such ban")
	default:
		a.logChange(r, "ban lifted", "as", r.PathValue("as"), "who", r.PathValue("who"))
		w.WriteHeader(http.StatusNoContent)
	}
}

// ParseBanDuration reads a duration as Go writes them ("90m", "12h"), or
// a whole number of days or weeks ("7d", "2w").
func ParseBanDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			if v, err := strconv.Atoi(n); err == nil && v > 0 && v < 100_000 {
				return time.Duration(v) * unit, nil
			}
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration (90m, 12h, 7d, 2w)", s)
	}
	return d, nil
}
