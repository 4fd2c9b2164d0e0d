package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	paho5 "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/pflag"
	"github.com/ternmq/tern/packets"
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
	fl.StringVar(&f.cafile, "cafile", "", "PEM `file` of the CA certificates to verify the broker with (turns TLS on)")
	fl.StringVar(&f.cert, "cert", "", "PEM `file` of a client certificate, with --key (turns TLS on)")
	fl.StringVar(&f.key, "key", "", "PEM `file` of the private key of --cert")
	fl.BoolVar(&f.insecure, "insecure", false, "do not check that the broker certificate's name matches the host")
	fl.BoolVar(&f.osCert, "tls-use-os-certs", false, "TLS, verifying the broker with the system's CA certificates")
	fl.StringArrayVar(&f.userProps, "user-property", nil, "MQTT 5 user property `key=value`, repeatable")
	fl.DurationVar(&f.timeout, "connect-timeout", 10*time.Second, "how long to wait for the connection")
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

// message is a received application message.
type message struct {
	topic   string
	payload []byte
	retain  bool
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
	if f.keepAlive < 0 || f.keepAlive > 65535 {
		return nil, fmt.Errorf("-k %d: want 0 to 65535 seconds", f.keepAlive)
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
	c       *paho5.Client
	props   paho5.UserProperties
	srvDisc chan *paho5.Disconnect // the broker's DISCONNECT, if it sent one
}

func (f *clientFlags) connect5(ctx context.Context, id string, props paho5.UserProperties, onMessage func(message)) (*client5, error) {
	conn, err := f.dial(ctx)
	if err != nil {
		return nil, err
	}
	c5 := &client5{props: props, srvDisc: make(chan *paho5.Disconnect, 1)}
	c := paho5.NewClient(paho5.ClientConfig{
		Conn:               pahopackets.NewThreadSafeConn(conn),
		OnServerDisconnect: func(d *paho5.Disconnect) { c5.srvDisc <- d },
		OnPublishReceived: []func(paho5.PublishReceived) (bool, error){func(pr paho5.PublishReceived) (bool, error) {
			onMessage(message{topic: pr.Packet.Topic, payload: pr.Packet.Payload, retain: pr.Packet.Retain})
			return true, nil
		}},
		OnClientError: func(error) {},
	})
	cp := &paho5.Connect{ClientID: id, KeepAlive: uint16(f.keepAlive), CleanStart: true,
		Username: f.username, UsernameFlag: f.username != "", Password: []byte(f.password), PasswordFlag: f.password != ""}
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
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
	pk := &paho5.Publish{Topic: topic, Payload: payload, QoS: qos, Retain: retain}
	if len(c.props) > 0 {
		pk.Properties = &paho5.PublishProperties{User: c.props}
	}
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
	s := &paho5.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho5.SubscribeOptions{Topic: f, QoS: qos})
	}
	if len(c.props) > 0 {
		s.Properties = &paho5.SubscribeProperties{User: c.props}
	}
	ctx, cancel := untilLost(ctx, c.lost())
	defer cancel()
	ack, err := c.c.Subscribe(ctx, s)
	if err != nil && ack != nil {
		return subackError(filters, ack.Reasons)
	}
	return c.err(err)
}

func (c *client5) disconnect()           { c.c.Disconnect(&paho5.Disconnect{}) }
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
	c3 := &client3{lostCh: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker("tcp://broker"). // the connection comes from dial
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) { return f.dial(ctx) }).
		SetClientID(id).SetKeepAlive(time.Duration(f.keepAlive) * time.Second).SetProtocolVersion(uint(level)).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(f.timeout).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			onMessage(message{topic: m.Topic(), payload: m.Payload(), retain: m.Retained()})
		}).
		SetConnectionLostHandler(func(mqtt.Client, error) { close(c3.lostCh) })
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

func (c *client3) disconnect()           { c.c.Disconnect(250) }
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
