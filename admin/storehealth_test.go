package admin_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/memory"
)

// sickStore is a memory store that can report itself unable to write.
type sickStore struct {
	*memory.Store
	down atomic.Bool
}

func (s *sickStore) Health() error {
	if s.down.Load() {
		return errors.Join(storage.ErrUnavailable, errors.New("no space left on device"))
	}
	return nil
}

// While the store cannot write, /readyz answers 503 with the cause,
// tern_store_available is 0 and the retained delete is refused; all come
// back once it writes again.
func TestStoreUnavailable(t *testing.T) {
	st := &sickStore{Store: memory.New()}
	e := newEnv(t, &tern.Options{Store: st}, admin.Options{})
	st.down.Store(true)
	var body map[string]string
	e.getJSON(t, "GET", "/readyz", "", 503, &body)
	if body["status"] != "store unavailable" || !strings.Contains(body["cause"], "no space left on device") {
		t.Errorf("readyz: %v", body)
	}
	if m := e.scrape(t); m["tern_store_available"] != 0 {
		t.Errorf("tern_store_available = %v, want 0", m["tern_store_available"])
	}
	if msg := e.errorOf(t, "DELETE", "/api/v1/retained/a", "", 503); !strings.Contains(msg, "cannot write") {
		t.Errorf("DELETE retained: %q", msg)
	}
	st.down.Store(false)
	e.getJSON(t, "GET", "/readyz", "", 200, nil)
	if m := e.scrape(t); m["tern_store_available"] != 1 {
		t.Errorf("tern_store_available = %v, want 1", m["tern_store_available"])
	}
}

// The store ObserveStore wraps (tern serve's, for the restore progress and
// the commit histogram) still tells the broker when it cannot write.
func TestObservedStoreReportsHealth(t *testing.T) {
	st := &sickStore{Store: memory.New()}
	a := admin.New(nil, admin.Options{})
	srv, err := tern.New(&tern.Options{Store: a.ObserveStore(st), SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.StoreHealth(); err != nil {
		t.Fatalf("healthy store: %v", err)
	}
	st.down.Store(true)
	if err := srv.StoreHealth(); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("StoreHealth through ObserveStore = %v, want ErrUnavailable", err)
	}
}
