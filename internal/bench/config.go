package bench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ternmq/tern/packets"
)

// Scenario names a topology of publishers and subscribers.
type Scenario string

// The scenarios. Count means the number of connections of the scenario's
// main role: see each one.
const (
	// Conn opens Count connections, holds them idle for Duration and
	// reports the connect rate and how many succeeded.
	Conn Scenario = "conn"
	// Pub runs Count publishers, each on its own topic, with no
	// subscribers: it measures how fast the broker accepts messages.
	Pub Scenario = "pub"
	// Sub runs Count subscribers on Filter and counts what other programs
	// publish there (for example "tern bench pub" in another shell).
	Sub Scenario = "sub"
	// FanIn runs Count publishers, each on its own topic, and one
	// subscriber that receives them all.
	FanIn Scenario = "fanin"
	// FanOut runs one publisher and Count subscribers on its topic.
	FanOut Scenario = "fanout"
	// Pairs runs Count publisher/subscriber pairs, each on its own topic.
	Pairs Scenario = "pairs"
	// Latency is Pairs at a fixed total Rate (1000 msg/s unless set); it
	// reports end-to-end latency percentiles.
	Latency Scenario = "latency"
	// Retained publishes Count retained messages (QoS 1, each on its own
	// topic), then measures how long a new subscriber to "#" takes to
	// receive them all; Duration bounds that wait.
	Retained Scenario = "retained"

	// Stuck runs one publisher at full speed (open loop) on one topic,
	// Count subscribers to it that never read after their SUBACK, and one
	// healthy subscriber that reads everything: a phase at QoS 0, then one
	// at QoS 1, each of Duration. It reports what the healthy subscriber
	// received, its longest wait between two messages, the broker's memory
	// and when the broker closed the stuck connections.
	Stuck Scenario = "stuck"
	// RetFlood stores Count retained messages, then has one client send
	// SUBSCRIBE "#" Stress.Repeat times without ever reading, holds it for
	// Duration and reports the broker's memory during and after.
	RetFlood Scenario = "retflood"
	// Partial sends hostile incomplete packets: (a) Count connections
	// that send 3 bytes of a PUBLISH and stop, timing when the broker
	// closes them; (b) Stress.Large connections that send most of a large
	// PUBLISH and hold for Duration, measuring the broker's memory; (c) one
	// connection that drips a large PUBLISH at a byte a second.
	Partial Scenario = "partial"
	// Filters subscribes to extreme filters: (a) one filter of
	// Stress.Levels levels, from one client and then from Count clients
	// more; (b) Stress.Filters distinct filters from one client. It reports
	// the broker's answers and memory.
	Filters Scenario = "filters"
)

// Scenarios lists every scenario, in the order the help text shows them.
var Scenarios = []Scenario{Conn, Pub, Sub, FanIn, FanOut, Pairs, Latency, Retained, Stuck, RetFlood, Partial, Filters}

// ParseScenario returns the scenario named s.
func ParseScenario(s string) (Scenario, error) {
	for _, sc := range Scenarios {
		if string(sc) == s {
			return sc, nil
		}
	}
	names := make([]string, len(Scenarios))
	for i, sc := range Scenarios {
		names[i] = string(sc)
	}
	return "", fmt.Errorf("bench: unknown scenario %q (want one of %s)", s, strings.Join(names, ", "))
}

// Config describes one run. The zero value of every field but Scenario and
// Addr is replaced by the default documented on it.
type Config struct {
	Scenario Scenario
	// Addr is the broker's TCP address, "host:port".
	Addr string
	// Version is the MQTT protocol level: packets.V31, V311 (default) or V5.
	Version byte
	// Count is the number of connections of the scenario's main role
	// (see [Scenario]). Default 10 (100,000 messages for Retained, 10,000
	// for RetFlood, 5,000 for Partial, 20 for Filters). For Stuck it is the
	// number of stuck subscribers, taken as given: 0 runs the baseline
	// without any ("tern bench stuck" defaults it to 100).
	Count int
	// ConnectInterval is the pause between starting two connections;
	// 0 starts them as fast as Parallel allows.
	ConnectInterval time.Duration
	// Parallel caps the handshakes in progress at once. Default 100.
	Parallel int
	// ConnectTimeout bounds each connection's TCP connect plus CONNECT /
	// CONNACK (and SUBSCRIBE / SUBACK) exchange. Default 10 s.
	ConnectTimeout time.Duration
	// PublishInterval is the pause between two messages of one publisher;
	// 0 with no Rate publishes as fast as Window, Flow and the broker allow.
	PublishInterval time.Duration
	// Rate is the total publish rate in messages per second over all
	// publishers; it overrides PublishInterval.
	Rate float64
	// PayloadSize is the payload size in bytes, at least HeaderSize.
	// Default 64 (256 for the stress scenarios).
	PayloadSize int
	// QoS is the QoS of publications and subscriptions (0, 1 or 2).
	QoS byte
	// Window is how many QoS 1/2 messages one publisher keeps
	// unacknowledged at most (capped by a v5 broker's Receive Maximum).
	// Default 100.
	Window int
	// Flow, when positive, keeps every publisher at most Flow messages ahead
	// of the slowest subscriber that should receive its messages: end-to-end
	// flow control, so that a broker's queues stay bounded and throughput is
	// what it can sustain. Negative turns it off (open loop). Default 1000.
	Flow int
	// Duration is how long publishers publish (Conn: how long connections
	// are held; Sub: how long to listen; Retained: the most to wait for the
	// retained messages; Stuck: each phase; RetFlood: how long the flooding
	// client stays; Partial: how long (b) holds; Filters: the most each
	// step may take). Default 10 s (Stuck 15 s, RetFlood 20 s, Filters 60 s).
	Duration time.Duration
	// Drain is the most to wait, after publishing stops, for outstanding
	// acknowledgements and deliveries before counting the rest as lost.
	// Default 5 s.
	Drain time.Duration
	// Limit, when positive, stops each publisher after this many messages
	// (the window then ends when all have stopped); in the Sub scenario it
	// ends the run once the subscribers have received this many in all.
	Limit int64
	// TopicPrefix starts every topic; publisher i publishes on
	// "<prefix>/<i>". Default "tern-bench".
	TopicPrefix string
	// Filter is the Sub scenario's topic filter. Default "<prefix>/#".
	Filter string
	// ClientPrefix starts every client identifier. Default "tb".
	ClientPrefix string
	// Username and Password are sent in CONNECT when Username is set.
	Username string
	Password string
	// KeepAlive is the keep alive sent in CONNECT; idle connections ping at
	// half of it. Default 60 s (Partial: 5 s, and its connections never
	// ping).
	KeepAlive time.Duration
	// Persistent gives every connection a persistent session: MQTT 5
	// connections start clean with a Session Expiry Interval of one hour,
	// 3.1.1 ones connect with clean session 0 (and so resume what an
	// earlier run left). Brokers that persist sessions then store what they
	// queue for subscribers.
	Persistent bool
	// ConnSubscribe makes every connection of the Conn scenario subscribe,
	// at QoS, to a topic of its own ("<prefix>/<i>") before it goes idle,
	// as most real idle clients do.
	ConnSubscribe bool
	// KeepRetained leaves the Retained (and RetFlood) scenario's messages on the broker;
	// by default they are cleared afterwards.
	KeepRetained bool
	// BrokerPID, when set, is the broker's process id on this machine: its
	// resident memory is read before the clients connect and again once
	// they are all connected (Conn), once the retained messages are
	// delivered (Retained) or at the end of publishing (see [RSSStats]);
	// the stress scenarios sample it every Stress.RSSInterval and keep the
	// peak.
	BrokerPID int
	// TLS, when set, makes every connection use TLS with this
	// configuration (its ServerName defaults to the host of Addr).
	TLS *tls.Config
	// Stress holds the settings of the stress scenarios.
	Stress StressConfig
	// Progress receives a line every second; nil for none.
	Progress io.Writer
	// Ready, when set, is called once every connection is established and
	// subscribed, just before publishing starts.
	Ready func()
}

// withDefaults returns a copy of c with defaults filled in, or an error for
// invalid settings.
func (c Config) withDefaults() (Config, error) {
	if _, err := ParseScenario(string(c.Scenario)); err != nil {
		return c, err
	}
	if c.Addr == "" {
		return c, errors.New("bench: no broker address")
	}
	if c.Version == 0 {
		c.Version = packets.V311
	}
	if c.Version != packets.V31 && c.Version != packets.V311 && c.Version != packets.V5 {
		return c, fmt.Errorf("bench: protocol version %d is not 3, 4 or 5", c.Version)
	}
	if isStress(c.Scenario) {
		if err := c.stressDefaults(); err != nil {
			return c, err
		}
	}
	if c.Count == 0 && c.Scenario != Stuck {
		c.Count = 10
		if c.Scenario == Retained {
			c.Count = 100_000
		}
	}
	if c.Count < 0 {
		return c, errors.New("bench: negative count")
	}
	if c.Parallel <= 0 {
		c.Parallel = 100
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.PayloadSize == 0 {
		c.PayloadSize = 64
	}
	if c.PayloadSize < HeaderSize {
		return c, fmt.Errorf("bench: payload size %d is below the %d-byte accounting header", c.PayloadSize, HeaderSize)
	}
	if c.QoS > 2 {
		return c, fmt.Errorf("bench: QoS %d", c.QoS)
	}
	if c.Window <= 0 {
		c.Window = 100
	}
	if c.Window > 65535 {
		return c, errors.New("bench: window above 65535")
	}
	if c.Flow == 0 {
		c.Flow = 1000
	}
	if c.Scenario == Latency && c.Rate == 0 && c.PublishInterval == 0 {
		c.Rate = 1000
	}
	if c.Rate < 0 || c.PublishInterval < 0 {
		return c, errors.New("bench: negative rate or interval")
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Drain <= 0 {
		c.Drain = 5 * time.Second
	}
	if c.TopicPrefix == "" {
		c.TopicPrefix = "tern-bench"
	}
	if c.Filter == "" {
		c.Filter = c.TopicPrefix + "/#"
	}
	if c.ClientPrefix == "" {
		c.ClientPrefix = "tb"
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 60 * time.Second
	}
	if c.KeepAlive > 65535*time.Second {
		return c, errors.New("bench: keep alive above 65535 s")
	}
	return c, nil
}

// perPublisherRate returns the messages per second of one of n
// publishers, 0 for unlimited.
func (c *Config) perPublisherRate(n int) float64 {
	switch {
	case c.Rate > 0 && n > 0:
		return c.Rate / float64(n)
	case c.PublishInterval > 0:
		return float64(time.Second) / float64(c.PublishInterval)
	}
	return 0
}
