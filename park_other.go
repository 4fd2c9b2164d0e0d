//go:build !linux

package tern

import (
	"log/slog"
	"net"
	"sync/atomic"
)

// idlePoller is available on Linux only; elsewhere every connection keeps
// its reading goroutine.
type idlePoller struct {
	pings   atomic.Int64
	refused atomic.Int64
}

func newIdlePoller(*slog.Logger) *idlePoller   { return &idlePoller{} }
func parkFD(net.Conn) int                      { return -1 }
func (p *idlePoller) park(*Client, int64) bool { return false }
func (p *idlePoller) take(c *Client) bool      { return false }
func (p *idlePoller) close()                   {}
func (c *Client) revive() error                { return nil }
func (c *Client) ensureLive()                  {}
func wrapConn(nc net.Conn) net.Conn            { return nc }
