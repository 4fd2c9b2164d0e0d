// Package auth provides Tern's file-based authentication and authorization
// hooks, compatible with Mosquitto's files:
//
//   - [PasswordFile], an Authenticator reading a password file of
//     "username:hash" lines as written by mosquitto_passwd or "tern passwd"
//     (PBKDF2-SHA512 "$7$" hashes, and the older salted SHA-512 "$6$").
//   - [ACL], an Authorizer reading a Mosquitto ACL file ("user", "topic",
//     "pattern" lines), denying what the file does not allow.
//
// Both re-read their file on Reload (wire it to SIGHUP), keeping the rules
// in force when the new file does not parse.
//
// A client connected through a TLS listener that uses the client
// certificate's name as the user name (listeners.TLSOptions
// IdentityAsUsername) is known to both hooks by that name; see [Username].
//
// Connections made in the process with tern.Server.DialInProcess (the local
// side of a bridge) are trusted when they give no user name, as the
// in-process client is; with a user name they are checked as that user.
package auth
