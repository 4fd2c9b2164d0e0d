// Package bench is an MQTT load generator in the manner of emqtt-bench: it
// opens many client connections to a broker, publishes and subscribes in a
// chosen topology (a [Scenario]) and reports connect rates, throughput,
// end-to-end latency and exact delivery accounting.
//
// Every message carries a small header in its payload (see [Header]): the
// run it belongs to, the publisher's number, a per-publisher sequence number
// and the time it was sent. Subscribers use it to count, for each
// publisher, the messages received, lost (sent but never received, after a
// drain period), duplicated and out of order, and to measure latency.
//
// The generator speaks MQTT with the [packets] codec over plain TCP: each
// connection has one goroutine reading and one writing, and a writer sends
// whatever has been queued in one system call, so that the generator is
// rarely the bottleneck. [Run] always returns on its own: the connect phase,
// the measurement and the drain are each bounded in time.
//
// The stress scenarios ([Stuck], [RetFlood], [Partial], [Filters]) misuse
// the broker as stuck, slow or hostile clients would, and report what it
// did: whom it kept serving, which connections it closed and when, and its
// resident memory sampled throughout (Config.BrokerPID). Their settings
// are in [StressConfig].
//
// The command-line front end is "tern bench"; bench/compare runs it
// against Tern, Mosquitto and mochi-mqtt side by side.
package bench
