package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/pflag"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// clientFlags are the connection flags tern pub and tern sub share, named
// as mosquitto_pub and mosquitto_sub name them.
type clientFlags struct {
	host, unix       string
	port             int
	id               string
	keepAlive        int
	username         string
	password         string
	version          string
	cafile           string
	cert, key        string
	insecure, osCert bool
	userProps        []string
	timeout          time.Duration
	persistent       bool   // -c: keep the session (clean start / clean session off)
	expiry           string // -x: session expiry interval
	debug            bool   // -d: print the packets
	properties       []string
	willTopic        string
	willPayload      string
	willQoS          int
	willRetain       bool

	props    *props5   // parsed -D options
	debugOut io.Writer // where -d prints
}

func (f *clientFlags) register(fl *pflag.FlagSet, what string) {
	fl.Bool("help", false, "show this help") // no -h: it is the host, as in mosquitto_pub and mosquitto_sub
	fl.StringVarP(&f.host, "host", "h", "localhost", "broker host")
	fl.IntVarP(&f.port, "port", "p", 0, "broker port (default 1883, or 8883 with TLS)")
	fl.StringVar(&f.unix, "unix", "", "connect to the Unix socket at `path` instead of host and port")
	fl.StringVarP(&f.id, "id", "i", "", "client identifier (default: a random tern-"+what+"-… one)")
	fl.IntVarP(&f.keepAlive, "keepalive", "k", 60, "keep alive, in seconds")
	fl.StringVarP(&f.username, "username", "u", "", "user name")
	fl.StringVarP(&f.password, "pw", "P", "", "password")
	fl.StringVarP(&f.version, "protocol-version", "V", "5", "MQTT `version`: mqttv5 (5), mqttv311 (311, 4) or mqttv31 (31, 3)")
	fl.BoolVarP(&f.persistent, "disable-clean-session", "c", false, "keep the session when disconnected (needs -i); MQTT 5: session expiry never, unless -x")
	fl.StringVarP(&f.expiry, "session-expiry-interval", "x", "", "MQTT 5 session expiry interval in `seconds` (-1 or ∞: never)")
	fl.BoolVarP(&f.debug, "debug", "d", false, "print the packets sent and received to standard error")
	fl.StringArrayVarP(&f.properties, "property", "D", nil, "MQTT 5 property: -D `command identifier value` (see below), repeatable")
	fl.StringVar(&f.willTopic, "will-topic", "", "topic of the will message, published if the connection ends abnormally")
	fl.StringVar(&f.willPayload, "will-payload", "", "payload of the will message")
	fl.IntVar(&f.willQoS, "will-qos", 0, "QoS of the will message: 0, 1 or 2")
	fl.BoolVar(&f.willRetain, "will-retain", false, "retain the will message")
	fl.StringVar(&f.cafile, "cafile", "", "PEM `file` of the CA certificates to verify the broker with (turns TLS on)")
	fl.StringVar(&f.cert, "cert", "", "PEM `file` of a client certificate, with --key (turns TLS on)")
	fl.StringVar(&f.key, "key", "", "PEM `file` of the private key of --cert")
	fl.BoolVar(&f.insecure, "insecure", false, "do not check that the broker certificate's name matches the host")
	fl.BoolVar(&f.osCert, "tls-use-os-certs", false, "TLS, verifying the broker with the system's CA certificates")
	fl.StringArrayVar(&f.userProps, "user-property", nil, "MQTT 5 user property `key=value`, repeatable")
	fl.DurationVar(&f.timeout, "connect-timeout", 10*time.Second, "how long to wait for the connection")
}

// propertiesHelp explains -D, for the commands' help.
const propertiesHelp = `
MQTT 5 properties are set with -D command identifier value (user-property
takes a key and a value), as in mosquitto_pub and mosquitto_sub:
  connect      maximum-packet-size, receive-maximum, request-problem-information,
               request-response-information, session-expiry-interval,
               topic-alias-maximum, user-property
  publish      content-type, correlation-data, message-expiry-interval,
               payload-format-indicator, response-topic, user-property
  subscribe    subscription-identifier, user-property
  unsubscribe  user-property
  disconnect   reason-string, session-expiry-interval, user-property
  will         content-type, correlation-data, message-expiry-interval,
               payload-format-indicator, response-topic, user-property,
               will-delay-interval`

// sessionExpiry returns the session expiry -c and -x ask for: -x, else
// never with -c, else 0 (nil: the property is left out).
func (f *clientFlags) sessionExpiry() (*uint32, error) {
	switch f.expiry {
	case "":
		if f.persistent {
			v := uint32(math.MaxUint32)
			return &v, nil
		}
		return nil, nil
	case "-1", "∞", "inf", "infinity":
		v := uint32(math.MaxUint32)
		return &v, nil
	}
	n, err := strconv.ParseUint(f.expiry, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("-x %q: want seconds from 0 to 4294967295, or -1 for never", f.expiry)
	}
	v := uint32(n)
	return &v, nil
}

// will returns the will message the flags describe, or nil.
func (f *clientFlags) will() (*paho5.WillMessage, error) {
	if f.willTopic == "" {
		if f.willPayload != "" || f.willQoS != 0 || f.willRetain {
			return nil, errors.New("--will-payload, --will-qos and --will-retain need --will-topic")
		}
		return nil, nil
	}
	if err := topics.ValidateName(f.willTopic); err != nil {
		return nil, fmt.Errorf("--will-topic %q: %w", f.willTopic, err)
	}
	if f.willQoS < 0 || f.willQoS > 2 {
		return nil, fmt.Errorf("--will-qos %d: want 0, 1 or 2", f.willQoS)
	}
	return &paho5.WillMessage{Topic: f.willTopic, Payload: []byte(f.willPayload), QoS: byte(f.willQoS), Retain: f.willRetain}, nil
}

// protocolLevel parses -V.
func protocolLevel(v string) (byte, error) {
	switch strings.ToLower(v) {
	case "mqttv5", "5":
		return 5, nil
	case "mqttv311", "311", "4":
		return 4, nil
	case "mqttv31", "31", "3":
		return 3, nil
	}
	return 0, fmt.Errorf("-V %q: want mqttv5, mqttv311 or mqttv31 (5, 4 or 3)", v)
}

// userProperties parses --user-property key=value flags.
func (f *clientFlags) userProperties() (paho5.UserProperties, error) {
	var out paho5.UserProperties
	for _, kv := range f.userProps {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--user-property %q: want key=value", kv)
		}
		out.Add(k, v)
	}
	return out, nil
}

// tlsConfig returns the TLS configuration the flags ask for, or nil for
// plain TCP.
func (f *clientFlags) tlsConfig() (*tls.Config, error) {
	if f.cafile == "" && f.cert == "" && !f.insecure && !f.osCert {
		return nil, nil
	}
	cfg := &tls.Config{ServerName: f.host, MinVersion: tls.VersionTLS12}
	if f.cafile != "" {
		pem, err := os.ReadFile(f.cafile)
		if err != nil {
			return nil, fmt.Errorf("--cafile: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cafile %s: no PEM certificate in it", f.cafile)
		}
	}
	if f.cert != "" || f.key != "" {
		c, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("--cert, --key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	if f.insecure { // verify the chain, not the name, as mosquitto's --insecure
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	}
	return cfg, nil
}

// dial opens the connection to the broker.
func (f *clientFlags) dial(ctx context.Context) (net.Conn, error) {
	if f.unix != "" {
		return (&net.Dialer{}).DialContext(ctx, "unix", f.unix)
	}
	tc, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	port := f.port
	if port == 0 {
		port = 1883
		if tc != nil {
			port = 8883
		}
	}
	addr := net.JoinHostPort(f.host, strconv.Itoa(port))
	if tc != nil {
		return (&tls.Dialer{Config: tc}).DialContext(ctx, "tcp", addr)
	}
	return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
}

// dialTraced opens the connection, printing its packets with -d.
func (f *clientFlags) dialTraced(ctx context.Context, id string) (net.Conn, error) {
	c, err := f.dial(ctx)
	if err != nil || !f.debug {
		return c, err
	}
	return newTraceConn(c, id, f.debugOut), nil
}

// mqttClient is the little tern pub and tern sub need of an MQTT client,
// over paho.golang (MQTT 5) or paho.mqtt.golang (3.1 and 3.1.1).
type mqttClient interface {
	publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error
	subscribe(ctx context.Context, filters []string, qos byte) error
	disconnect()
	// lost is closed when the connection ends other than by disconnect.
	lost() <-chan struct{}
	// lostErr says why the connection was lost.
	lostErr() error
}

var errConnectionLost = errors.New("connection lost")

// connect connects to the broker as the flags say; received messages go
// to onMessage, on the client library's goroutine.
func (f *clientFlags) connect(ctx context.Context, what string, onMessage func(message)) (mqttClient, error) {
	level, err := protocolLevel(f.version)
	if err != nil {
		return nil, err
	}
	props, err := f.userProperties()
	if err != nil {
		return nil, err
	}
	if len(props) > 0 && level != 5 {
		return nil, errors.New("--user-property needs MQTT 5 (-V 5)")
	}
	if f.props, err = parseProperties(f.properties); err != nil {
		return nil, err
	}
	if level != 5 && (f.props.any || f.expiry != "") {
		return nil, errors.New("-D and -x need MQTT 5 (-V 5)")
	}
	if f.keepAlive < 0 || f.keepAlive > 65535 {
		return nil, fmt.Errorf("-k %d: want 0 to 65535 seconds", f.keepAlive)
	}
	if f.persistent && f.id == "" {
		return nil, errors.New("-c needs a client id (-i): the session is found again by it")
	}
	if f.debugOut == nil {
		f.debugOut = io.Discard
	}
	id := f.id
	if id == "" {
		var b [6]byte
		rand.Read(b[:])
		id = "tern-" + what + "-" + hex.EncodeToString(b[:])
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if level == 5 {
		return f.connect5(ctx, id, props, onMessage)
	}
	return f.connect3(ctx, id, level, onMessage)
}

type client5 struct {
	f       *clientFlags
	c       *paho5.Client
	props   paho5.UserProperties
	srvDisc chan *paho5.Disconnect // the broker's DISCONNECT, if it sent one
	acks    *ackWait
}

// ackWait is the client's session state, counting the QoS 1/2 messages
// handed to the program whose acknowledgement has not been sent: paho
// sends it after the handler returns, and a client that leaves after its
// last message (sub -C) waits for it, as mosquitto_sub does, so that the
// broker does not send that message again to the next persistent run.
type ackWait struct {
	*state.State
	mu      sync.Mutex
	pending int
	idle    chan struct{} // a value when pending fell to 0
}

func newAckWait() *ackWait { return &ackWait{State: state.NewInMemory(), idle: make(chan struct{}, 1)} }

// received counts a QoS 1/2 message about to be handed to the program.
func (a *ackWait) received() {
	a.mu.Lock()
	a.pending++
	a.mu.Unlock()
}

// Ack sends the acknowledgement and counts it.
func (a *ackWait) Ack(pb *pahopackets.Publish) error {
	err := a.State.Ack(pb)
	a.mu.Lock()
	if pb.QoS > 0 && a.pending > 0 {
		if a.pending--; a.pending == 0 {
			select {
			case a.idle <- struct{}{}:
			default:
			}
		}
	}
	a.mu.Unlock()
	return err
}

// wait returns once every acknowledgement is sent, the connection is
// lost, or after 5 s (a loaded machine may take more than a second).
func (a *ackWait) wait(lost <-chan struct{}) {
	deadline := time.After(5 * time.Second)
	for {
		a.mu.Lock()
		n := a.pending
		a.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-a.idle:
		case <-lost:
			return
		case <-deadline:
			return
		}
	}
}

func (f *clientFlags) connect5(ctx context.Context, id string, props paho5.UserProperties, onMessage func(message)) (*client5, error) {
	expiry, err := f.sessionExpiry()
	if err != nil {
		return nil, err
	}
	will, err := f.will()
	if err != nil {
		return nil, err
	}
	conn, err := f.dialTraced(ctx, id)
	if err != nil {
		return nil, err
	}
	c5 := &client5{f: f, props: props, srvDisc: make(chan *paho5.Disconnect, 1), acks: newAckWait()}
	c := paho5.NewClient(paho5.ClientConfig{
		Conn:               pahopackets.NewThreadSafeConn(conn),
		Session:            c5.acks,
		OnServerDisconnect: func(d *paho5.Disconnect) { c5.srvDisc <- d },
		OnPublishReceived: []func(paho5.PublishReceived) (bool, error){func(pr paho5.PublishReceived) (bool, error) {
			p := pr.Packet
			if p.QoS > 0 {
				c5.acks.received()
			}
			onMessage(message{topic: p.Topic, payload: p.Payload, retain: p.Retain, qos: p.QoS, mid: p.PacketID,
				dup: p.Duplicate(), props: p.Properties, at: time.Now()})
			return true, nil
		}},
		OnClientError: func(error) {},
	})
	cprops := f.props.connect
	if expiry != nil {
		cprops.SessionExpiryInterval = expiry
	}
	cp := &paho5.Connect{ClientID: id, KeepAlive: uint16(f.keepAlive), CleanStart: !f.persistent,
		Username: f.username, UsernameFlag: f.username != "", Password: []byte(f.password), PasswordFlag: f.password != "",
		Properties: &cprops}
	if will != nil {
		wp := f.props.will
		cp.WillMessage, cp.WillProperties = will, &wp
	}
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		c5.acks.Close()
		if ack != nil {
			return nil, fmt.Errorf("connection refused: 0x%02X %s", ack.ReasonCode, reasonName(ack.ReasonCode))
		}
		return nil, err
	}
	c5.c = c
	return c5, nil
}

// err explains an error of an operation: the broker's DISCONNECT, when it
// sent one, says more than the client library's error.
func (c *client5) err(err error) error {
	if err == nil {
		return nil
	}
	select {
	case <-c.lost():
	default:
		return err
	}
	select { // the library reports the DISCONNECT just after the loss
	case d := <-c.srvDisc:
		return fmt.Errorf("disconnected by the broker: 0x%02X %s", d.ReasonCode, reasonName(d.ReasonCode))
	case <-time.After(time.Second):
		return err
	}
}

func (c *client5) publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	pp := c.f.props.publish
	pp.User = append(slices.Clone(c.props), pp.User...)
	pk := &paho5.Publish{Topic: topic, Payload: payload, QoS: qos, Retain: retain, Properties: &pp}
	ctx, cancel := untilLost(ctx, c.lost())
	defer cancel()
	resp, err := c.c.Publish(ctx, pk)
	if err != nil && resp != nil {
		return fmt.Errorf("publish refused: 0x%02X %s", resp.ReasonCode, reasonName(resp.ReasonCode))
	}
	return c.err(err)
}

// untilLost returns a context that also ends when the connection is lost.
func untilLost(ctx context.Context, lost <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-lost:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (c *client5) subscribe(ctx context.Context, filters []string, qos byte) error {
	sp := c.f.props.subscribe
	sp.User = append(slices.Clone(c.props), sp.User...)
	s := &paho5.Subscribe{Properties: &sp}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho5.SubscribeOptions{Topic: f, QoS: qos})
	}
	ctx, cancel := untilLost(ctx, c.lost())
	defer cancel()
	ack, err := c.c.Subscribe(ctx, s)
	if err != nil && ack != nil {
		return subackError(filters, ack.Reasons)
	}
	return c.err(err)
}

func (c *client5) disconnect() {
	c.acks.wait(c.lost())
	dp := c.f.props.disconnect
	c.c.Disconnect(&paho5.Disconnect{Properties: &dp})
	c.acks.Close() // paho closes only a session it made
}
func (c *client5) lost() <-chan struct{} { return c.c.Done() }
func (c *client5) lostErr() error        { return c.err(errConnectionLost) }

// reasonName names an MQTT reason code.
func reasonName(code byte) string { return packets.ReasonCode(code).String() }

// subackError reports the filters a SUBACK refused.
func subackError(filters []string, codes []byte) error {
	var errs []error
	for i, code := range codes {
		if i < len(filters) && code >= 0x80 {
			errs = append(errs, fmt.Errorf("subscription to %q refused: 0x%02X %s", filters[i], code, reasonName(code)))
		}
	}
	return errors.Join(errs...)
}

type client3 struct {
	c      mqtt.Client
	lostCh chan struct{}
}

func (f *clientFlags) connect3(ctx context.Context, id string, level byte, onMessage func(message)) (*client3, error) {
	will, err := f.will()
	if err != nil {
		return nil, err
	}
	c3 := &client3{lostCh: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker("tcp://broker"). // the connection comes from dial
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) { return f.dialTraced(ctx, id) }).
		SetClientID(id).SetKeepAlive(time.Duration(f.keepAlive) * time.Second).SetProtocolVersion(uint(level)).
		SetCleanSession(!f.persistent).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(f.timeout).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			onMessage(message{topic: m.Topic(), payload: m.Payload(), retain: m.Retained(), qos: m.Qos(),
				mid: m.MessageID(), dup: m.Duplicate(), at: time.Now()})
		}).
		SetConnectionLostHandler(func(mqtt.Client, error) { close(c3.lostCh) })
	if will != nil {
		opts.SetBinaryWill(will.Topic, will.Payload, will.QoS, will.Retain)
	}
	if f.username != "" {
		opts.SetUsername(f.username)
	}
	if f.password != "" {
		opts.SetPassword(f.password)
	}
	c3.c = mqtt.NewClient(opts)
	if err := wait(ctx, c3.c.Connect()); err != nil {
		return nil, err
	}
	return c3, nil
}

// wait waits for a paho.mqtt.golang token until ctx ends.
func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *client3) disconnect()           { c.c.Disconnect(1000) }
func (c *client3) lost() <-chan struct{} { return c.lostCh }
func (c *client3) lostErr() error        { return errConnectionLost }

func (c *client3) publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	ctx, cancel := untilLost(ctx, c.lost())
	defer cancel()
	return wait(ctx, c.c.Publish(topic, qos, retain, payload))
}

func (c *client3) subscribe(ctx context.Context, filters []string, qos byte) error {
	m := make(map[string]byte, len(filters))
	for _, f := range filters {
		m[f] = qos
	}
	ctx, cancel := untilLost(ctx, c.lost())
	defer cancel()
	t := c.c.SubscribeMultiple(m, nil)
	if err := wait(ctx, t); err != nil {
		return err
	}
	granted := t.(*mqtt.SubscribeToken).Result()
	codes := make([]byte, len(filters))
	for i, f := range filters {
		codes[i] = granted[f]
	}
	return subackError(filters, codes)
}
