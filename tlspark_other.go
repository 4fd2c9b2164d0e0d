//go:build !linux

package tern

// ensureLiveTLS does nothing where connections do not park.
func (c *Client) ensureLiveTLS() {}
