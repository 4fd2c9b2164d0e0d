package admin_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/admin"
)

// fakeBans is an in-memory ban list.
type fakeBans struct {
	mu   sync.Mutex
	bans []admin.Ban
}

func (f *fakeBans) List() []admin.Ban {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]admin.Ban(nil), f.bans...)
}

func (f *fakeBans) Add(b admin.Ban) (admin.Ban, error) {
	if b.As != "clientid" && b.As != "username" && b.As != "address" {
		return b, fmt.Errorf("%w: as %q", admin.ErrInvalidBan, b.As)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b.At = time.Now().UTC()
	f.bans = append(f.bans, b)
	return b, nil
}

func (f *fakeBans) Delete(as, who string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, b := range f.bans {
		if b.As == as && b.Who == who {
			f.bans = append(f.bans[:i], f.bans[i+1:]...)
			return true, nil
		}
	}
	return false, nil
}

func TestBans(t *testing.T) {
	f := &fakeBans{}
	e := newEnv(t, nil, admin.Options{Bans: f})
	var got admin.Ban
	e.getJSON(t, "POST", "/api/v1/bans", `{"as":"clientid","who":"dev1","reason":"spam","duration":"2d"}`, 201, &got)
	if got.Who != "dev1" || got.By != "admin" || got.Until == nil || time.Until(*got.Until) < 47*time.Hour {
		t.Fatalf("added %+v", got)
	}
	e.getJSON(t, "POST", "/api/v1/bans", `{"as":"address","who":"10.0.0.0/8","until":"2099-01-01T00:00:00Z"}`, 201, &got)
	got = admin.Ban{}
	e.getJSON(t, "POST", "/api/v1/bans", `{"as":"username","who":"mallory"}`, 201, &got)
	if got.Until != nil {
		t.Errorf("ban without duration has until %v", got.Until)
	}
	var page admin.Page[admin.Ban]
	e.getJSON(t, "GET", "/api/v1/bans", "", 200, &page)
	if page.Meta.Count != 3 || len(page.Data) != 3 {
		t.Fatalf("list %+v", page)
	}
	e.getJSON(t, "GET", "/api/v1/bans?as=address&limit=1", "", 200, &page)
	if page.Meta.Count != 1 || page.Data[0].Who != "10.0.0.0/8" {
		t.Fatalf("filtered list %+v", page)
	}
	for _, bad := range []string{`{"as":"clientid"}`, `{"as":"planet","who":"x"}`, `{"as":"clientid","who":"x","duration":"soon"}`,
		`{"as":"clientid","who":"x","until":"tomorrow"}`, `{"as":"clientid","who":"x","until":"2099-01-01T00:00:00Z","duration":"1h"}`,
		`{"as":"clientid","who":"x","extra":1}`} {
		e.getJSON(t, "POST", "/api/v1/bans", bad, 400, nil)
	}
	e.getJSON(t, "DELETE", "/api/v1/bans/address/10.0.0.0/8", "", 204, nil) // the range's slash is part of who
	e.getJSON(t, "DELETE", "/api/v1/bans/address/10.0.0.0/8", "", 404, nil)
	if n := len(f.List()); n != 2 {
		t.Errorf("%d bans left", n)
	}
}

// Without a ban list the endpoints do not exist.
func TestNoBans(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	e.getJSON(t, "GET", "/api/v1/bans", "", 404, nil)
}

func TestParseBanDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"90m": 90 * time.Minute, "7d": 7 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1h30m": 90 * time.Minute} {
		if got, err := admin.ParseBanDuration(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "0s", "-1h", "d", "x"} {
		if _, err := admin.ParseBanDuration(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
