//go:build !linux

package tern

// ensureLiveTLS does nothing where connections do not park.
func (c *Client) ensureLiveTLS(int) {}

// tlsAlertSize is the size of an encrypted TLS alert record, at most.
const tlsAlertSize = 64
