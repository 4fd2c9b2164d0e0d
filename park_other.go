//go:build !linux

package tern

import "net"

// idlePoller is available on Linux only; elsewhere every connection keeps
// its reading goroutine.
type idlePoller struct{}

var poller idlePoller

func parkFD(net.Conn) int                      { return -1 }
func (p *idlePoller) park(*Client, int64) bool { return false }
func (p *idlePoller) take(c *Client) bool      { return false }
