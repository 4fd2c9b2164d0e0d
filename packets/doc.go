// Package packets encodes and decodes MQTT 3.1, 3.1.1 and 5.0 control packets.
//
// It is the wire codec that the rest of Tern stands on and has no dependency
// beyond the standard library, so a client can use it too. Every packet type
// has its own struct implementing [Packet]; v5 properties live in
// [Properties]; every v5 reason code is a [ReasonCode], which also
// implements error.
//
// Decoding validates as it reads and returns an [*Error] carrying the reason
// code a server must answer with (0x81 Malformed Packet, 0x82 Protocol
// Error, 0x95 Packet Too Large, ...). [ReadFixedHeader] enforces a maximum
// packet size before any payload is read or allocated.
//
// Decoded packets alias the buffer they were decoded from: strings and byte
// slices point into it, so decoding a PUBLISH allocates nothing beyond the
// packet struct itself. The caller must not modify a buffer after decoding a
// packet from it while the packet is in use.
//
// Decode overwrites every field of the packet it is called on, so a
// connection can decode into one reused struct. To keep that free of
// allocations, slices already in the packet (user properties, subscription
// identifiers, subscriptions, filters, reason codes) are truncated and
// reused: decoding into a packet again invalidates slices taken from it,
// just as reusing the buffer does. Copy what must outlive the next decode.
//
// Encoding appends to a caller-supplied buffer (Encode(dst, version)), so a
// connection can encode many packets into one reusable buffer and write them
// with one system call.
package packets
