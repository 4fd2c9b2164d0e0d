package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	paho5 "github.com/eclipse/paho.golang/paho"
)

// message is a received application message.
type message struct {
	topic   string
	payload []byte
	retain  bool
	dup     bool
	qos     byte
	mid     uint16
	props   *paho5.PublishProperties // MQTT 5 only
	at      time.Time
}

// formatMessage writes m as mosquitto_sub -F does with format:
//
//	%%  a percent sign        %t  topic               %p  payload
//	%l  payload length        %q  QoS                 %r  retain flag (0, 1)
//	%m  message id (QoS 1, 2) %x, %X payload in hex   %j, %J the message as JSON (J: with properties)
//	%I  ISO-8601 time         %U  Unix time with ns   %A  topic alias
//	%C  content type          %D  correlation data    %E  message expiry interval
//	%F  payload format        %P  user properties     %R  response topic
//	%S  subscription identifier
//	@Y @m @d @H @M @S @z @s @@ date and time parts (year, month, day, hour,
//	minute, second, zone, Unix seconds)
//	\n \t \r \\ \0 \a \e \v   escapes
//
// v5 properties a message does not have print as nothing.
func formatMessage(format string, m message) []byte {
	var b bytes.Buffer
	p := m.props
	if p == nil {
		p = &paho5.PublishProperties{}
	}
	for i := 0; i < len(format); i++ {
		c := format[i]
		if i+1 == len(format) || c != '%' && c != '@' && c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		d := format[i]
		switch c {
		case '\\':
			if r, ok := map[byte]byte{'n': '\n', 't': '\t', 'r': '\r', '\\': '\\', '0': 0, 'a': 7, 'e': 27, 'v': '\v'}[d]; ok {
				b.WriteByte(r)
			} else {
				b.WriteByte('\\')
				b.WriteByte(d)
			}
		case '@':
			if lay, ok := map[byte]string{'Y': "2006", 'm': "01", 'd': "02", 'H': "15", 'M': "04", 'S': "05", 'z': "-0700"}[d]; ok {
				b.WriteString(m.at.Format(lay))
			} else if d == 's' {
				b.WriteString(strconv.FormatInt(m.at.Unix(), 10))
			} else if d == '@' {
				b.WriteByte('@')
			} else {
				b.WriteByte('@')
				b.WriteByte(d)
			}
		case '%':
			switch d {
			case '%':
				b.WriteByte('%')
			case 't':
				b.WriteString(m.topic)
			case 'p':
				b.Write(m.payload)
			case 'l':
				b.WriteString(strconv.Itoa(len(m.payload)))
			case 'q':
				b.WriteString(strconv.Itoa(int(m.qos)))
			case 'r':
				b.WriteString(boolDigit(m.retain))
			case 'm':
				b.WriteString(strconv.Itoa(int(m.mid)))
			case 'x':
				b.WriteString(hex.EncodeToString(m.payload))
			case 'X':
				b.WriteString(string(bytes.ToUpper([]byte(hex.EncodeToString(m.payload)))))
			case 'I':
				b.WriteString(m.at.Format("2006-01-02T15:04:05-0700"))
			case 'U':
				b.WriteString(strconv.FormatInt(m.at.Unix(), 10) + "." + strconv.Itoa(1e9 + m.at.Nanosecond())[1:])
			case 'j', 'J':
				b.Write(messageJSON(m, d == 'J'))
			case 'A':
				if p.TopicAlias != nil {
					b.WriteString(strconv.Itoa(int(*p.TopicAlias)))
				}
			case 'C':
				b.WriteString(p.ContentType)
			case 'D':
				b.Write(p.CorrelationData)
			case 'E':
				if p.MessageExpiry != nil {
					b.WriteString(strconv.FormatUint(uint64(*p.MessageExpiry), 10))
				}
			case 'F':
				if p.PayloadFormat != nil {
					b.WriteString(strconv.Itoa(int(*p.PayloadFormat)))
				}
			case 'P':
				for i, u := range p.User {
					if i > 0 {
						b.WriteByte(' ')
					}
					b.WriteString(u.Key + ":" + u.Value)
				}
			case 'R':
				b.WriteString(p.ResponseTopic)
			case 'S':
				if p.SubscriptionIdentifier != nil {
					b.WriteString(strconv.Itoa(*p.SubscriptionIdentifier))
				}
			default:
				b.WriteByte('%')
				b.WriteByte(d)
			}
		}
	}
	return b.Bytes()
}

func boolDigit(v bool) string {
	if v {
		return "1"
	}
	return "0"
}

// messageJSON is %j (and with properties %J): the payload as a JSON value
// when it is one, as a string when it is UTF-8, else in base64.
func messageJSON(m message, props bool) []byte {
	type property struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
	out := struct {
		Tst                    string          `json:"tst"`
		Topic                  string          `json:"topic"`
		QoS                    byte            `json:"qos"`
		Retain                 int             `json:"retain"`
		PayloadLen             int             `json:"payloadlen"`
		Mid                    uint16          `json:"mid,omitempty"`
		ContentType            string          `json:"content-type,omitempty"`
		CorrelationData        string          `json:"correlation-data,omitempty"`
		MessageExpiryInterval  *uint32         `json:"message-expiry-interval,omitempty"`
		PayloadFormatIndicator *byte           `json:"payload-format-indicator,omitempty"`
		ResponseTopic          string          `json:"response-topic,omitempty"`
		SubscriptionIdentifier *int            `json:"subscription-identifier,omitempty"`
		UserProperties         []property      `json:"user-properties,omitempty"`
		Payload                json.RawMessage `json:"payload"`
	}{Tst: m.at.UTC().Format("2006-01-02T15:04:05.000000Z"), Topic: m.topic, QoS: m.qos, PayloadLen: len(m.payload), Mid: m.mid}
	if m.retain {
		out.Retain = 1
	}
	if props && m.props != nil {
		p := m.props
		out.ContentType, out.CorrelationData, out.ResponseTopic = p.ContentType, string(p.CorrelationData), p.ResponseTopic
		out.MessageExpiryInterval, out.PayloadFormatIndicator, out.SubscriptionIdentifier = p.MessageExpiry, p.PayloadFormat, p.SubscriptionIdentifier
		for _, u := range p.User {
			out.UserProperties = append(out.UserProperties, property{u.Key, u.Value})
		}
	}
	switch {
	case json.Valid(m.payload) && len(m.payload) > 0:
		out.Payload = m.payload
	case utf8.Valid(m.payload):
		out.Payload, _ = json.Marshal(string(m.payload))
	default:
		out.Payload, _ = json.Marshal(m.payload) // base64
	}
	b, _ := json.Marshal(out)
	return b
}
