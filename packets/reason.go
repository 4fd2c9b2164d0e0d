package packets

import (
	"errors"
	"fmt"
)

// ReasonCode is an MQTT 5.0 reason code. It implements error so that a
// reason code can be returned, wrapped and matched with errors.Is.
type ReasonCode byte

// Reason codes of MQTT 5.0 (section 2.4). Codes below 0x80 mean success.
const (
	Success                     ReasonCode = 0x00
	NormalDisconnection         ReasonCode = 0x00
	GrantedQoS0                 ReasonCode = 0x00
	GrantedQoS1                 ReasonCode = 0x01
	GrantedQoS2                 ReasonCode = 0x02
	DisconnectWithWill          ReasonCode = 0x04
	NoMatchingSubscribers       ReasonCode = 0x10
	NoSubscriptionExisted       ReasonCode = 0x11
	ContinueAuthentication      ReasonCode = 0x18
	ReAuthenticate              ReasonCode = 0x19
	UnspecifiedError            ReasonCode = 0x80
	MalformedPacket             ReasonCode = 0x81
	ProtocolError               ReasonCode = 0x82
	ImplementationSpecificError ReasonCode = 0x83
	UnsupportedProtocolVersion  ReasonCode = 0x84
	ClientIdentifierNotValid    ReasonCode = 0x85
	BadUserNameOrPassword       ReasonCode = 0x86
	NotAuthorized               ReasonCode = 0x87
	ServerUnavailable           ReasonCode = 0x88
	ServerBusy                  ReasonCode = 0x89
	Banned                      ReasonCode = 0x8A
	ServerShuttingDown          ReasonCode = 0x8B
	BadAuthenticationMethod     ReasonCode = 0x8C
	KeepAliveTimeout            ReasonCode = 0x8D
	SessionTakenOver            ReasonCode = 0x8E
	TopicFilterInvalid          ReasonCode = 0x8F
	TopicNameInvalid            ReasonCode = 0x90
	PacketIdentifierInUse       ReasonCode = 0x91
	PacketIdentifierNotFound    ReasonCode = 0x92
	ReceiveMaximumExceeded      ReasonCode = 0x93
	TopicAliasInvalid           ReasonCode = 0x94
	PacketTooLarge              ReasonCode = 0x95
	MessageRateTooHigh          ReasonCode = 0x96
	QuotaExceeded               ReasonCode = 0x97
	AdministrativeAction        ReasonCode = 0x98
	PayloadFormatInvalid        ReasonCode = 0x99
	RetainNotSupported          ReasonCode = 0x9A
	QoSNotSupported             ReasonCode = 0x9B
	UseAnotherServer            ReasonCode = 0x9C
	ServerMoved                 ReasonCode = 0x9D
	SharedSubsNotSupported      ReasonCode = 0x9E
	ConnectionRateExceeded      ReasonCode = 0x9F
	MaximumConnectTime          ReasonCode = 0xA0
	SubIDsNotSupported          ReasonCode = 0xA1
	WildcardSubsNotSupported    ReasonCode = 0xA2
)

var reasonNames = map[ReasonCode]string{
	0x00: "Success", 0x01: "Granted QoS 1", 0x02: "Granted QoS 2",
	0x04: "Disconnect with Will Message", 0x10: "No matching subscribers",
	0x11: "No subscription existed", 0x18: "Continue authentication",
	0x19: "Re-authenticate", 0x80: "Unspecified error", 0x81: "Malformed Packet",
	0x82: "Protocol Error", 0x83: "Implementation specific error",
	0x84: "Unsupported Protocol Version", 0x85: "Client Identifier not valid",
	0x86: "Bad User Name or Password", 0x87: "Not authorized",
	0x88: "Server unavailable", 0x89: "Server busy", 0x8A: "Banned",
	0x8B: "Server shutting down", 0x8C: "Bad authentication method",
	0x8D: "Keep Alive timeout", 0x8E: "Session taken over",
	0x8F: "Topic Filter invalid", 0x90: "Topic Name invalid",
	0x91: "Packet Identifier in use", 0x92: "Packet Identifier not found",
	0x93: "Receive Maximum exceeded", 0x94: "Topic Alias invalid",
	0x95: "Packet too large", 0x96: "Message rate too high",
	0x97: "Quota exceeded", 0x98: "Administrative action",
	0x99: "Payload format invalid", 0x9A: "Retain not supported",
	0x9B: "QoS not supported", 0x9C: "Use another server", 0x9D: "Server moved",
	0x9E: "Shared Subscriptions not supported", 0x9F: "Connection rate exceeded",
	0xA0: "Maximum connect time", 0xA1: "Subscription Identifiers not supported",
	0xA2: "Wildcard Subscriptions not supported",
}

// String returns the reason code's name from the specification.
func (c ReasonCode) String() string {
	if n, ok := reasonNames[c]; ok {
		return n
	}
	return fmt.Sprintf("ReasonCode(0x%02X)", byte(c))
}

// Error implements error.
func (c ReasonCode) Error() string { return fmt.Sprintf("mqtt: 0x%02X %s", byte(c), c.String()) }

// IsError reports whether the code means failure (0x80 and above).
func (c ReasonCode) IsError() bool { return c >= 0x80 }

// codeSet is a set of reason codes, one bit a code.
type codeSet [4]uint64

func newCodeSet(codes ...byte) codeSet {
	var s codeSet
	for _, c := range codes {
		s[c>>6] |= 1 << (c & 63)
	}
	return s
}

func (s *codeSet) has(c ReasonCode) bool { return s[c>>6]&(1<<(c&63)) != 0 }

// The reason codes each packet type may carry (MQTT 5.0, section 3).
var (
	connackCodes = newCodeSet(0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
		0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F)
	pubackCodes   = newCodeSet(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)
	pubrelCodes   = newCodeSet(0x00, 0x92)
	subackCodes   = newCodeSet(0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2)
	unsubackCodes = newCodeSet(0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91)
	disconnCodes  = newCodeSet(0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D,
		0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D,
		0x9E, 0x9F, 0xA0, 0xA1, 0xA2)
	authCodes = newCodeSet(0x00, 0x18, 0x19)
)

// ValidFor reports whether the reason code may be sent in a packet of type t
// under MQTT 5.0.
func (c ReasonCode) ValidFor(t Type) bool {
	switch t {
	case CONNACK:
		return connackCodes.has(c)
	case PUBACK, PUBREC:
		return pubackCodes.has(c)
	case PUBREL, PUBCOMP:
		return pubrelCodes.has(c)
	case SUBACK:
		return subackCodes.has(c)
	case UNSUBACK:
		return unsubackCodes.has(c)
	case DISCONNECT:
		return disconnCodes.has(c)
	case AUTH:
		return authCodes.has(c)
	}
	return false
}

// MQTT 3.1 and 3.1.1 CONNACK return codes.
const (
	ConnAccepted          byte = 0x00
	ConnRefusedVersion    byte = 0x01
	ConnRefusedIdentifier byte = 0x02
	ConnRefusedServer     byte = 0x03
	ConnRefusedBadAuth    byte = 0x04
	ConnRefusedNotAuth    byte = 0x05
)

// ConnackCodeV3 maps a v5 CONNACK reason code to the closest MQTT 3.1.1
// return code, since v5 reason codes must never reach a v3 client.
func ConnackCodeV3(c ReasonCode) byte {
	switch c {
	case Success:
		return ConnAccepted
	case UnsupportedProtocolVersion:
		return ConnRefusedVersion
	case ClientIdentifierNotValid:
		return ConnRefusedIdentifier
	case BadUserNameOrPassword, BadAuthenticationMethod:
		return ConnRefusedBadAuth
	case NotAuthorized, Banned:
		return ConnRefusedNotAuth
	}
	return ConnRefusedServer
}

// connackReasonV3 maps a 3.1.1 return code back to a v5 reason code.
func connackReasonV3(b byte) (ReasonCode, bool) {
	switch b {
	case ConnAccepted:
		return Success, true
	case ConnRefusedVersion:
		return UnsupportedProtocolVersion, true
	case ConnRefusedIdentifier:
		return ClientIdentifierNotValid, true
	case ConnRefusedServer:
		return ServerUnavailable, true
	case ConnRefusedBadAuth:
		return BadUserNameOrPassword, true
	case ConnRefusedNotAuth:
		return NotAuthorized, true
	}
	return 0, false
}

// Error is a decoding or validation failure. Code is the reason code a v5
// server sends in its CONNACK or DISCONNECT; a v3 server closes the
// connection. errors.Is(err, packets.MalformedPacket) matches on the code.
type Error struct {
	Code ReasonCode
	Msg  string
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("packets: %s (0x%02X %s)", e.Msg, byte(e.Code), e.Code.String())
}

// Unwrap returns the reason code, so errors.Is works with reason codes.
func (e *Error) Unwrap() error { return e.Code }

// CodeOf returns the reason code carried by err, or UnspecifiedError when
// err carries none. It returns Success for a nil error.
func CodeOf(err error) ReasonCode {
	if err == nil {
		return Success
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	var rc ReasonCode
	if errors.As(err, &rc) {
		return rc
	}
	return UnspecifiedError
}

func malformed(msg string) error     { return &Error{Code: MalformedPacket, Msg: msg} }
func protocolError(msg string) error { return &Error{Code: ProtocolError, Msg: msg} }

// Errors shared by many decoders.
var (
	// ErrShortBuffer means the buffer ends before the packet does.
	ErrShortBuffer = malformed("packet shorter than its length")
	// ErrTrailingBytes means bytes are left over after the last field.
	ErrTrailingBytes = malformed("bytes after the end of the packet")
	errVBI           = malformed("variable byte integer longer than 4 bytes")
	errVBINotMinimal = malformed("variable byte integer not minimally encoded")
	errUTF8          = malformed("string is not well-formed UTF-8")
	errNullChar      = malformed("string contains U+0000")
	errFlags         = malformed("reserved fixed header flags set")
	errZeroPacketID  = protocolError("packet identifier 0")
	errReason        = malformed("reason code not allowed for this packet")
)
