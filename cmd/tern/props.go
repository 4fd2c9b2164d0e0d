package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	paho5 "github.com/eclipse/paho.golang/paho"
)

// propSep joins the words of one -D option into one argument: see
// joinPropertyArgs.
const propSep = "\x1f"

// joinPropertyArgs rewrites the arguments of tern pub and tern sub so that
// each "-D command identifier value" (and "-D command user-property key
// value"), written as mosquitto_pub and mosquitto_sub take it, is one
// argument of the -D flag.
func joinPropertyArgs(args []string) []string {
	if len(args) == 0 || (args[0] != "pub" && args[0] != "sub") {
		return args
	}
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if a != "-D" && a != "--property" {
			out = append(out, a)
			continue
		}
		n := 3
		if i+2 < len(args) && args[i+2] == "user-property" {
			n = 4
		}
		n = min(n, len(args)-i-1) // too few words: parseProperties says what is missing
		if n == 0 {
			return append(out, a) // the flag parser says it needs an argument
		}
		out = append(out, a, strings.Join(args[i+1:i+1+n], propSep))
		i += n
	}
	return out
}

// props5 are the MQTT 5 properties given with -D, by packet.
type props5 struct {
	connect     paho5.ConnectProperties
	publish     paho5.PublishProperties
	subscribe   paho5.SubscribeProperties
	unsubscribe paho5.UserProperties
	disconnect  paho5.DisconnectProperties
	will        paho5.WillProperties
	any         bool
}

// propertyNames lists, by command, the properties -D may set, as
// mosquitto_pub and mosquitto_sub name them.
var propertyNames = map[string][]string{
	"connect": {"maximum-packet-size", "receive-maximum", "request-problem-information",
		"request-response-information", "session-expiry-interval", "topic-alias-maximum", "user-property"},
	"publish": {"content-type", "correlation-data", "message-expiry-interval", "payload-format-indicator",
		"response-topic", "user-property"},
	"subscribe":   {"subscription-identifier", "user-property"},
	"unsubscribe": {"user-property"},
	"disconnect":  {"reason-string", "session-expiry-interval", "user-property"},
	"will": {"content-type", "correlation-data", "message-expiry-interval", "payload-format-indicator",
		"response-topic", "user-property", "will-delay-interval"},
}

// parseProperties parses the -D options.
func parseProperties(opts []string) (*props5, error) {
	p := &props5{}
	for _, o := range opts {
		words := strings.Split(o, propSep)
		if len(words) < 3 {
			return nil, fmt.Errorf("-D %q: want -D command identifier value", strings.Join(words, " "))
		}
		cmd, name, value := words[0], words[1], words[2]
		names, ok := propertyNames[cmd]
		if !ok {
			return nil, fmt.Errorf("-D %s: the command is one of connect, publish, subscribe, unsubscribe, disconnect, will", cmd)
		}
		if !contains(names, name) {
			return nil, fmt.Errorf("-D %s %s: not a %s property (%s)", cmd, name, cmd, strings.Join(names, ", "))
		}
		if err := p.set(cmd, name, value, words[3:]); err != nil {
			return nil, fmt.Errorf("-D %s %s: %w", cmd, name, err)
		}
		p.any = true
	}
	return p, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (p *props5) set(cmd, name, value string, rest []string) error {
	u32 := func() (*uint32, error) {
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number from 0 to %d", value, uint64(math.MaxUint32))
		}
		v := uint32(n)
		return &v, nil
	}
	u16 := func() (*uint16, error) {
		n, err := strconv.ParseUint(value, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number from 0 to 65535", value)
		}
		v := uint16(n)
		return &v, nil
	}
	byte01 := func() (*byte, error) {
		if value != "0" && value != "1" {
			return nil, fmt.Errorf("%q is not 0 or 1", value)
		}
		v := value[0] - '0'
		return &v, nil
	}
	user := func(up *paho5.UserProperties) error {
		if len(rest) != 1 {
			return errors.New("want -D " + cmd + " user-property key value")
		}
		up.Add(value, rest[0])
		return nil
	}
	var err error
	switch cmd {
	case "connect":
		c := &p.connect
		switch name {
		case "maximum-packet-size":
			c.MaximumPacketSize, err = u32()
		case "receive-maximum":
			c.ReceiveMaximum, err = u16()
		case "request-problem-information":
			var b *byte
			b, err = byte01()
			c.RequestProblemInfo = err == nil && *b == 1
		case "request-response-information":
			var b *byte
			b, err = byte01()
			c.RequestResponseInfo = err == nil && *b == 1
		case "session-expiry-interval":
			c.SessionExpiryInterval, err = u32()
		case "topic-alias-maximum":
			c.TopicAliasMaximum, err = u16()
		case "user-property":
			err = user(&c.User)
		}
	case "publish", "will":
		var ct, rt *string
		var cd *[]byte
		var pf **byte
		var me **uint32
		var up *paho5.UserProperties
		if cmd == "publish" {
			q := &p.publish
			ct, rt, cd, pf, me, up = &q.ContentType, &q.ResponseTopic, &q.CorrelationData, &q.PayloadFormat, &q.MessageExpiry, &q.User
		} else {
			q := &p.will
			ct, rt, cd, pf, me, up = &q.ContentType, &q.ResponseTopic, &q.CorrelationData, &q.PayloadFormat, &q.MessageExpiry, &q.User
		}
		switch name {
		case "content-type":
			*ct = value
		case "correlation-data":
			*cd = []byte(value)
		case "message-expiry-interval":
			*me, err = u32()
		case "payload-format-indicator":
			*pf, err = byte01()
		case "response-topic":
			*rt = value
		case "user-property":
			err = user(up)
		case "will-delay-interval":
			p.will.WillDelayInterval, err = u32()
		}
	case "subscribe":
		switch name {
		case "subscription-identifier":
			var v *uint32
			if v, err = u32(); err == nil {
				if *v < 1 || *v > 268435455 {
					return fmt.Errorf("%d is not from 1 to 268435455", *v)
				}
				id := int(*v)
				p.subscribe.SubscriptionIdentifier = &id
			}
		case "user-property":
			err = user(&p.subscribe.User)
		}
	case "unsubscribe":
		err = user(&p.unsubscribe)
	case "disconnect":
		switch name {
		case "reason-string":
			p.disconnect.ReasonString = value
		case "session-expiry-interval":
			p.disconnect.SessionExpiryInterval, err = u32()
		case "user-property":
			err = user(&p.disconnect.User)
		}
	}
	return err
}
