// Package ban keeps a list of banned clients, by client identifier, user
// name or network address (an IP or a CIDR range), each until a time or
// for ever, and refuses them: a tern.ConnectGate that answers a banned
// client's CONNECT with 0x8A Banned (3.1.1: return code 5, not
// authorized), before any authenticator runs, so a banned device costs
// the JWT or HTTP auth backends nothing. Banning a connected client also
// disconnects it; since 0x8A is not a DISCONNECT reason code
// [MQTT-3.14.2-1], an MQTT 5 client reads 0x98 Administrative action.
//
// It also detects flapping: a client identifier that connects more than
// MaxConnects times within Window is banned for BanFor (off unless
// MaxConnects is set). The CONNECT that crosses the line is refused;
// other connections are left alone. Detections are counted and logged.
//
// The list is kept in a JSON file of its own (bans/bans.json under the
// data directory, when tern serve has one), rewritten whole on every change
// (written to a temporary file, fsync'd, renamed over the old one, and
// the directory fsync'd), so a ban survives restarts and crashes and the
// file is never half-written. A ban list is small and changes rarely, so
// a whole rewrite costs little, the file stays readable and editable by
// hand, and the list needs nothing of the broker's message store. While
// the list is open its file is locked (flock on bans.json.lock), so
// "tern ban" refuses to edit the file under a running broker and goes
// through the admin API instead.
//
// A ban's expiry is checked at every lookup, so it lifts on time; expired
// entries are swept from memory periodically and from the file at its
// next write.
package ban

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
)

// Kind is what a ban matches.
type Kind string

// Kinds of bans, with EMQX's names.
const (
	ClientID Kind = "clientid"
	Username Kind = "username"
	Address  Kind = "address" // an IP address or a CIDR range ("peerhost" in EMQX)
)

// ParseKind reads a kind, accepting EMQX's and other common names
// (peerhost, peerhost_net, ip, cidr, user, client_id).
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(s) {
	case "clientid", "client_id", "client":
		return ClientID, nil
	case "username", "user":
		return Username, nil
	case "address", "peerhost", "peerhost_net", "ip", "cidr", "addr":
		return Address, nil
	}
	return "", fmt.Errorf("%w: %q is not clientid, username or address", ErrInvalid, s)
}

// Ban is one entry of the list.
type Ban struct {
	As     Kind      `json:"as"`
	Who    string    `json:"who"` // the client id, user name, IP or CIDR range
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"` // who set it: "admin", "flapping", ...
	At     time.Time `json:"at"`
	// Until is when the ban lifts; zero for never.
	Until time.Time `json:"until,omitzero"`
}

// Active reports whether the ban is in force at now.
func (b *Ban) Active(now time.Time) bool { return b.Until.IsZero() || now.Before(b.Until) }

// key identifies a ban: one per kind and who.
type key struct {
	as  Kind
	who string
}

// normalize checks a ban and puts who in its canonical form (a CIDR range
// masked, an address without zone, IPv4 in IPv6 unmapped).
func normalize(b *Ban) error {
	if b.Who == "" {
		return fmt.Errorf("%w: who is empty", ErrInvalid)
	}
	switch b.As {
	case ClientID, Username:
	case Address:
		p, err := parseAddress(b.Who)
		if err != nil {
			return err
		}
		b.Who = p.String()
		if p.IsSingleIP() {
			b.Who = p.Addr().String()
		}
	default:
		return fmt.Errorf("%w: %q is not clientid, username or address", ErrInvalid, b.As)
	}
	return nil
}

// parseAddress reads an IP address or a CIDR range as a prefix.
func parseAddress(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%w: %q is not an address or CIDR range", ErrInvalid, s)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %q is not an address or CIDR range", ErrInvalid, s)
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// FlappingOptions configure flapping detection.
type FlappingOptions struct {
	// MaxConnects is the most CONNECTs a client identifier may make
	// within Window; one more bans it. 0 turns detection off.
	MaxConnects int
	// Window is the period connects are counted over; default 1m.
	Window time.Duration
	// BanFor is how long a flapping client is banned; default 5m.
	BanFor time.Duration
}

// Options configure a List.
type Options struct {
	// File keeps the list; "" keeps it in memory only.
	File     string
	Flapping FlappingOptions
	// Logger receives the list's logs; nil uses slog.Default().
	Logger *slog.Logger
}

// List is the ban list and the hook that enforces it: a tern.ConnectGate,
// a tern.ConnectObserver (a user name that an authenticator gave the
// client, from a token say, is checked once the session is up), a
// tern.Starter and tern.Stopper (the sweeper, and kicking the clients a
// new ban matches), and a prometheus.Collector. It is safe for concurrent
// use.
type List struct {
	file string
	log  *slog.Logger
	lock *os.File // the flock on file+".lock"

	mu       sync.RWMutex
	bans     map[key]*Ban
	exact    map[netip.Addr]*Ban // address bans of one address
	nets     []*rangeBan         // address bans of a range
	flapOpts FlappingOptions

	flapMu sync.Mutex
	flaps  map[string]*flapCount

	writeMu sync.Mutex // one file write at a time
	dirty   atomic.Bool
	writing sync.WaitGroup

	srv  atomic.Pointer[tern.Server]
	stop chan struct{}
	done chan struct{}

	refused  [3]atomic.Int64 // by kind: clientid, username, address
	flapping atomic.Int64
	kicked   atomic.Int64

	descs descs
}

type rangeBan struct {
	p netip.Prefix
	b *Ban
}

type flapCount struct {
	start int64 // unix nanoseconds of the window's first connect
	n     int
}

var (
	_ tern.ConnectGate     = (*List)(nil)
	_ tern.ConnectObserver = (*List)(nil)
	_ tern.Starter         = (*List)(nil)
	_ tern.Stopper         = (*List)(nil)
)

// Errors.
var (
	// ErrLocked is returned by New when another process holds the file.
	ErrLocked = errors.New("ban: the ban file is in use by another process (a running broker?)")
	// ErrInvalid is wrapped by the errors of bans that are wrong.
	ErrInvalid = errors.New("ban: invalid ban")
)

// New opens the list, reading the file when it exists and locking it.
func New(opts Options) (*List, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	l := &List{file: opts.File, log: opts.Logger, bans: make(map[key]*Ban), exact: make(map[netip.Addr]*Ban),
		flaps: make(map[string]*flapCount), descs: newDescs()}
	if err := l.SetFlapping(opts.Flapping); err != nil {
		return nil, err
	}
	if l.file != "" {
		if err := os.MkdirAll(filepath.Dir(l.file), 0o755); err != nil {
			return nil, fmt.Errorf("ban: %w", err)
		}
		lock, err := lockFile(l.file + ".lock")
		if err != nil {
			return nil, err
		}
		l.lock = lock
		if err := l.Reload(); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// SetFlapping changes the flapping detection settings (tern serve calls it
// on SIGHUP).
func (l *List) SetFlapping(f FlappingOptions) error {
	if f.MaxConnects < 0 || f.Window < 0 || f.BanFor < 0 {
		return errors.New("ban: negative flapping setting")
	}
	if f.Window == 0 {
		f.Window = time.Minute
	}
	if f.BanFor == 0 {
		f.BanFor = 5 * time.Minute
	}
	l.mu.Lock()
	l.flapOpts = f
	l.mu.Unlock()
	return nil
}

// Close releases the file's lock. Stop calls it.
func (l *List) Close() error {
	l.writing.Wait()
	if l.lock != nil {
		err := unlockFile(l.lock)
		l.lock = nil
		return err
	}
	return nil
}

// fileForm is the file's JSON.
type fileForm struct {
	Version int   `json:"version"`
	Bans    []Ban `json:"bans"`
}

// Reload reads the file again, replacing the list (tern serve calls it on
// SIGHUP). A missing file is an empty list. If the file does not parse,
// the list in force stays and the error is returned.
func (l *List) Reload() error {
	if l.file == "" {
		return nil
	}
	data, err := os.ReadFile(l.file)
	if errors.Is(err, os.ErrNotExist) {
		data, err = []byte(`{"version":1,"bans":[]}`), nil
	}
	if err != nil {
		return fmt.Errorf("ban: %w", err)
	}
	var f fileForm
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("ban: %s: %w", l.file, err)
	}
	if f.Version != 1 {
		return fmt.Errorf("ban: %s: version %d is not 1", l.file, f.Version)
	}
	bans := make(map[key]*Ban, len(f.Bans))
	for i := range f.Bans {
		b := f.Bans[i]
		if err := normalize(&b); err != nil {
			return fmt.Errorf("ban: %s: entry %d: %w", l.file, i, err)
		}
		bans[key{b.As, b.Who}] = &b
	}
	l.mu.Lock()
	l.replaceLocked(bans)
	l.mu.Unlock()
	return nil
}

// replaceLocked sets the list to bans and rebuilds the address index.
func (l *List) replaceLocked(bans map[key]*Ban) {
	l.bans = bans
	l.exact = make(map[netip.Addr]*Ban)
	l.nets = nil
	for _, b := range bans {
		l.indexLocked(b)
	}
}

func (l *List) indexLocked(b *Ban) {
	if b.As != Address {
		return
	}
	p, _ := parseAddress(b.Who)
	if p.IsSingleIP() {
		l.exact[p.Addr()] = b
		return
	}
	l.nets = append(l.nets, &rangeBan{p, b})
}

func (l *List) unindexLocked(b *Ban) {
	if b.As != Address {
		return
	}
	p, _ := parseAddress(b.Who)
	if p.IsSingleIP() {
		delete(l.exact, p.Addr())
		return
	}
	l.nets = slices.DeleteFunc(l.nets, func(r *rangeBan) bool { return r.b == b })
}

// Add puts a ban in force, replacing one of the same kind and who, writes
// the file, and disconnects the connected clients it matches. At, when
// zero, is now. It returns the ban as stored.
func (l *List) Add(b Ban) (Ban, error) {
	if err := normalize(&b); err != nil {
		return b, err
	}
	if b.At.IsZero() {
		b.At = time.Now()
	}
	b.At, b.Until = b.At.UTC().Truncate(time.Millisecond), b.Until.UTC().Truncate(time.Millisecond)
	if !b.Until.IsZero() && !b.Until.After(b.At) {
		return b, fmt.Errorf("%w: until is not after now", ErrInvalid)
	}
	l.mu.Lock()
	k := key{b.As, b.Who}
	if old, ok := l.bans[k]; ok {
		l.unindexLocked(old)
	}
	nb := b
	l.bans[k] = &nb
	l.indexLocked(&nb)
	l.mu.Unlock()
	if err := l.save(); err != nil {
		return b, err
	}
	l.log.Info("client banned", "as", b.As, "who", b.Who, "until", b.Until, "reason", b.Reason, "by", b.By)
	l.kick(&nb)
	return b, nil
}

// Delete lifts the ban of a kind and who, writing the file; it reports
// whether there was one.
func (l *List) Delete(as Kind, who string) (bool, error) {
	b := Ban{As: as, Who: who}
	if err := normalize(&b); err != nil {
		return false, err
	}
	l.mu.Lock()
	old, ok := l.bans[key{b.As, b.Who}]
	if ok {
		delete(l.bans, key{b.As, b.Who})
		l.unindexLocked(old)
	}
	l.mu.Unlock()
	if !ok {
		return false, nil
	}
	l.log.Info("ban lifted", "as", b.As, "who", b.Who)
	return true, l.save()
}

// List returns the bans in force, oldest first.
func (l *List) List() []Ban {
	now := time.Now()
	l.mu.RLock()
	out := make([]Ban, 0, len(l.bans))
	for _, b := range l.bans {
		if b.Active(now) {
			out = append(out, *b)
		}
	}
	l.mu.RUnlock()
	slices.SortFunc(out, func(a, b Ban) int {
		return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.As, b.As), cmp.Compare(a.Who, b.Who))
	})
	return out
}

// Len returns the number of bans in force.
func (l *List) Len() int { return len(l.List()) }

// Lookup returns the ban in force that matches a client, if any: by its
// identifier, its user name or its address ("" or an address that does
// not parse matches no address ban).
func (l *List) Lookup(clientID, username, addr string) (Ban, bool) {
	now := time.Now()
	var ip netip.Addr
	if addr != "" {
		if ap, err := netip.ParseAddrPort(addr); err == nil {
			ip = ap.Addr().Unmap().WithZone("")
		} else if a, err := netip.ParseAddr(addr); err == nil {
			ip = a.Unmap().WithZone("")
		}
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if len(l.bans) == 0 {
		return Ban{}, false
	}
	if b, ok := l.bans[key{ClientID, clientID}]; ok && clientID != "" && b.Active(now) {
		return *b, true
	}
	if b, ok := l.bans[key{Username, username}]; ok && username != "" && b.Active(now) {
		return *b, true
	}
	if ip.IsValid() {
		if b, ok := l.exact[ip]; ok && b.Active(now) {
			return *b, true
		}
		for _, r := range l.nets {
			if r.p.Contains(ip) && r.b.Active(now) {
				return *r.b, true
			}
		}
	}
	return Ban{}, false
}

// save writes the file, unless the list is in memory only.
func (l *List) save() error {
	if l.file == "" {
		return nil
	}
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.dirty.Store(false)
	now := time.Now()
	l.mu.RLock()
	f := fileForm{Version: 1, Bans: make([]Ban, 0, len(l.bans))}
	for _, b := range l.bans {
		if b.Active(now) {
			f.Bans = append(f.Bans, *b)
		}
	}
	l.mu.RUnlock()
	slices.SortFunc(f.Bans, func(a, b Ban) int { return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.Who, b.Who)) })
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(l.file, append(data, '\n')); err != nil {
		l.log.Error("writing the ban file failed; the bans are in force but not durable", "file", l.file, "err", err)
		return fmt.Errorf("ban: %w", err)
	}
	return nil
}

// saveSoon writes the file in the background (for bans made on the CONNECT
// path), coalescing writes that pile up.
func (l *List) saveSoon() {
	if l.file == "" || !l.dirty.CompareAndSwap(false, true) {
		return
	}
	l.writing.Add(1)
	go func() {
		defer l.writing.Done()
		l.save()
	}()
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory, fsync'd, renamed over path, and the directory fsync'd.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ID implements tern.Hook.
func (l *List) ID() string { return "ban" }

// CheckConnect implements tern.ConnectGate: a banned client is refused
// with 0x8A; a client identifier connecting too often is banned.
func (l *List) CheckConnect(c *tern.Client, pk *packets.Connect) packets.ReasonCode {
	id := c.ID()
	if id == "" {
		id = pk.ClientID
	}
	if b, ok := l.Lookup(id, pk.Username, c.RemoteAddr()); ok {
		l.refused[kindIndex(b.As)].Add(1)
		l.log.Info("banned client refused", "client", id, "remote", c.RemoteAddr(), "as", b.As, "who", b.Who)
		return packets.Banned
	}
	if l.countConnect(id) {
		return packets.Banned
	}
	return packets.Success
}

func kindIndex(k Kind) int {
	switch k {
	case ClientID:
		return 0
	case Username:
		return 1
	}
	return 2
}

// countConnect counts a CONNECT of id and bans id when it is one too
// many for the window; it reports whether it did.
func (l *List) countConnect(id string) bool {
	l.mu.RLock()
	f := l.flapOpts
	l.mu.RUnlock()
	if f.MaxConnects <= 0 || id == "" {
		return false
	}
	now := time.Now()
	l.flapMu.Lock()
	fc, ok := l.flaps[id]
	if !ok || now.UnixNano()-fc.start > int64(f.Window) {
		if !ok {
			fc = &flapCount{}
			l.flaps[id] = fc
		}
		fc.start, fc.n = now.UnixNano(), 0
	}
	fc.n++
	n := fc.n
	over := n > f.MaxConnects
	if over {
		delete(l.flaps, id) // counting starts again after the ban
	}
	l.flapMu.Unlock()
	if !over {
		return false
	}
	b := Ban{As: ClientID, Who: id, By: "flapping", At: now.UTC().Truncate(time.Millisecond),
		Until:  now.Add(f.BanFor).UTC().Truncate(time.Millisecond),
		Reason: fmt.Sprintf("%d connects within %v", n, f.Window)}
	l.mu.Lock()
	k := key{ClientID, id}
	if old, ok := l.bans[k]; ok {
		l.unindexLocked(old)
	}
	l.bans[k] = &b
	l.indexLocked(&b)
	l.mu.Unlock()
	l.flapping.Add(1)
	l.refused[0].Add(1)
	l.log.Warn("flapping client banned", "client", id, "connects", n, "window", f.Window.String(), "ban", f.BanFor.String())
	l.saveSoon()
	return true
}

// OnSessionEstablished implements tern.ConnectObserver: a client whose
// user name, as the authenticators left it (from a token's claim, say),
// is banned is disconnected.
func (l *List) OnSessionEstablished(c *tern.Client, _ bool) {
	if c.Username() == "" {
		return
	}
	if b, ok := l.Lookup("", c.Username(), ""); ok {
		l.refused[kindIndex(b.As)].Add(1)
		l.log.Info("banned user name disconnected", "client", c.ID(), "username", c.Username())
		c.Disconnect(packets.Banned)
	}
}

// kick disconnects the connected clients a new ban matches.
func (l *List) kick(b *Ban) {
	srv := l.srv.Load()
	if srv == nil {
		return
	}
	if b.As == ClientID {
		if srv.Disconnect(b.Who, packets.Banned) {
			l.kicked.Add(1)
		}
		return
	}
	var p netip.Prefix
	if b.As == Address {
		p, _ = parseAddress(b.Who)
	}
	for _, ci := range srv.Clients() {
		match := false
		switch b.As {
		case Username:
			match = ci.Username == b.Who
		case Address:
			if ap, err := netip.ParseAddrPort(ci.RemoteAddr); err == nil {
				match = p.Contains(ap.Addr().Unmap())
			}
		}
		if match && srv.Disconnect(ci.ID, packets.Banned) {
			l.kicked.Add(1)
			l.log.Info("banned client disconnected", "client", ci.ID, "as", b.As, "who", b.Who)
		}
	}
}

// Start implements tern.Starter: it keeps the server, to disconnect the
// clients new bans match, and starts the sweeper.
func (l *List) Start(s *tern.Server) error {
	l.srv.Store(s)
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.sweep()
	return nil
}

// Stop implements tern.Stopper: it stops the sweeper, waits for file
// writes and releases the file.
func (l *List) Stop(context.Context) error {
	if l.stop != nil {
		close(l.stop)
		<-l.done
		l.stop = nil
	}
	return l.Close()
}

// sweep forgets expired bans and flapping counts now and then.
func (l *List) sweep() {
	defer close(l.done)
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.Sweep()
		}
	}
}

// Sweep forgets expired bans and the counts of clients that stopped
// connecting.
func (l *List) Sweep() {
	now := time.Now()
	l.mu.Lock()
	window := int64(l.flapOpts.Window)
	for k, b := range l.bans {
		if !b.Active(now) {
			delete(l.bans, k)
			l.unindexLocked(b)
		}
	}
	l.mu.Unlock()
	l.flapMu.Lock()
	for id, fc := range l.flaps {
		if now.UnixNano()-fc.start > window {
			delete(l.flaps, id)
		}
	}
	l.flapMu.Unlock()
}

// Stats are the list's counters.
type Stats struct {
	Bans          int // in force now
	RefusedByKind [3]int64
	Flapping      int64 // flapping clients banned
	Kicked        int64 // connected clients disconnected by a new ban
}

// Stats returns the list's counters.
func (l *List) Stats() Stats {
	s := Stats{Bans: l.Len(), Flapping: l.flapping.Load(), Kicked: l.kicked.Load()}
	for i := range s.RefusedByKind {
		s.RefusedByKind[i] = l.refused[i].Load()
	}
	return s
}

type descs struct {
	bans, refused, flapping, kicked *prometheus.Desc
}

func newDescs() descs {
	return descs{
		bans:     prometheus.NewDesc("tern_bans", "Bans in force.", nil, nil),
		refused:  prometheus.NewDesc("tern_banned_connects_total", "CONNECTs refused (and clients disconnected) for a ban, by what the ban matched.", []string{"as"}, nil),
		flapping: prometheus.NewDesc("tern_flapping_bans_total", "Client identifiers banned for connecting too often.", nil, nil),
		kicked:   prometheus.NewDesc("tern_ban_disconnects_total", "Connected clients disconnected by a new ban.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (l *List) Describe(ch chan<- *prometheus.Desc) {
	ch <- l.descs.bans
	ch <- l.descs.refused
	ch <- l.descs.flapping
	ch <- l.descs.kicked
}

// Collect implements prometheus.Collector.
func (l *List) Collect(ch chan<- prometheus.Metric) {
	s := l.Stats()
	ch <- prometheus.MustNewConstMetric(l.descs.bans, prometheus.GaugeValue, float64(s.Bans))
	for i, k := range []Kind{ClientID, Username, Address} {
		ch <- prometheus.MustNewConstMetric(l.descs.refused, prometheus.CounterValue, float64(s.RefusedByKind[i]), string(k))
	}
	ch <- prometheus.MustNewConstMetric(l.descs.flapping, prometheus.CounterValue, float64(s.Flapping))
	ch <- prometheus.MustNewConstMetric(l.descs.kicked, prometheus.CounterValue, float64(s.Kicked))
}
