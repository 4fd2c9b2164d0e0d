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

// identity returns the certificate identity of the client's connection.
func identity(c *tern.Client) string {
	if conn := c.Conn(); conn != nil {
		if id, ok := conn.(interface{ Identity() string }); ok {
			return id.Identity()
		}
	}
	return ""
}
