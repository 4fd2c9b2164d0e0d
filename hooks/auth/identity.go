package auth

import "github.com/ternmq/tern"

// Username returns the name the auth hooks know a client by: the identity
// of its verified client certificate when its listener provides one (a
// connection implementing Identity() string, as the TLS and secure
// WebSocket listeners' connections do with IdentityAsUsername), otherwise
// the user name of its CONNECT.
func Username(c *tern.Client) string {
	if id := identity(c); id != "" {
		return id
	}
	return c.Username()
}

// trustedInProcess reports whether c is a connection made in the process
// with tern.Server.DialInProcess (a bridge's local side, say) and without a
// user name: code in the process is trusted as the in-process client is.
// One that gives a user name is checked as that user.
func trustedInProcess(c *tern.Client) bool {
	return c.Listener() == tern.InProcessListener && c.Username() == ""
}

// identity returns the certificate identity of the client's connection.
func identity(c *tern.Client) string {
	if conn := c.Conn(); conn != nil {
		if id, ok := conn.(interface{ Identity() string }); ok {
			return id.Identity()
		}
	}
	return ""
}
