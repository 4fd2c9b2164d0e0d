package auth_test

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/auth"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// BenchmarkConnect measures whole connections (TCP connect, CONNECT,
// CONNACK, DISCONNECT) one after another, without authentication and with
// a password file whose hash has the default cost (PBKDF2-SHA512, 210,000
// iterations, or argon2id), the same user logging in each time: with the
// cache of verified passwords the rate stays close to the one without
// (BENCHMARKS.md).
//
//	go test -run - -bench Connect -benchtime 2000x ./hooks/auth
func BenchmarkConnect(b *testing.B) {
	for _, bc := range []struct {
		name string
		algo string // "" with no password file
		opts auth.PasswordOptions
	}{
		{"none", "none", auth.PasswordOptions{}},
		{"pbkdf2", auth.PBKDF2SHA512, auth.PasswordOptions{}},
		{"argon2id", auth.Argon2id, auth.PasswordOptions{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var hooks []tern.Hook
			if bc.algo != "none" {
				h, err := auth.HashPasswordWith("secret", auth.HashOptions{Algorithm: bc.algo})
				if err != nil {
					b.Fatal(err)
				}
				file := filepath.Join(b.TempDir(), "passwd")
				os.WriteFile(file, []byte("device:"+h+"\n"), 0o600)
				pw, err := auth.NewPasswordFile(file, bc.opts)
				if err != nil {
					b.Fatal(err)
				}
				hooks = append(hooks, pw)
			}
			srv := terntest.NewServer(b, &tern.Options{Logger: slog.New(slog.DiscardHandler)}, hooks...)
			connect := func() {
				nc, err := net.Dial("tcp", srv.Addr)
				if err != nil {
					b.Fatal(err)
				}
				c := terntest.NewConn(b, nc, packets.V5)
				if ack := c.Connect(&packets.Connect{ClientID: "device", CleanStart: true, UsernameFlag: true,
					Username: "device", PasswordFlag: true, Password: []byte("secret")}); ack.ReasonCode != 0 {
					b.Fatal(ack.ReasonCode)
				}
				c.Send(&packets.Disconnect{})
				c.ExpectClosed()
				c.Close()
			}
			connect() // the first login pays the hash
			b.ResetTimer()
			for range b.N {
				connect()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "connects/s")
		})
	}
}

// BenchmarkCheck is the password check of one login with the default
// cost: "cached" a password verified before (what a reconnecting client
// pays), "hash" one that is not (NoCache: every login). CPU only, so
// steadier than BenchmarkConnect on a shared machine; compare "cached"
// with BenchmarkConnect/none (BENCHMARKS.md).
//
//	go test -run - -bench Check ./hooks/auth
func BenchmarkCheck(b *testing.B) {
	for _, algo := range []string{auth.PBKDF2SHA512, auth.Argon2id} {
		h, err := auth.HashPasswordWith("secret", auth.HashOptions{Algorithm: algo})
		if err != nil {
			b.Fatal(err)
		}
		file := filepath.Join(b.TempDir(), "passwd")
		os.WriteFile(file, []byte("device:"+h+"\n"), 0o600)
		for _, noCache := range []bool{false, true} {
			name := algo + "/cached"
			if noCache {
				name = algo + "/hash"
			}
			b.Run(name, func(b *testing.B) {
				pw, err := auth.NewPasswordFile(file, auth.PasswordOptions{NoCache: noCache})
				if err != nil {
					b.Fatal(err)
				}
				pw.Check("device", "secret") // the first login pays the hash
				b.ResetTimer()
				for range b.N {
					if !pw.Check("device", "secret") {
						b.Fatal("refused")
					}
				}
			})
		}
	}
}
