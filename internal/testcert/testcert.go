// Package testcert makes certificate authorities and certificates for
// tests: ECDSA P-256 keys, certificates valid from an hour ago for a day
// unless a Spec says otherwise. Files are written with mode 0600.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority made for one test.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	Pool *x509.CertPool // holds Cert only
}

// Spec says what a certificate is for. The zero Spec is a server and
// client certificate for 127.0.0.1, valid from an hour ago for a day.
type Spec struct {
	CN     string
	Server bool // server authentication (extended key usage)
	Client bool // client authentication; neither Server nor Client: both
	DNS    []string
	// IPs are the IP address SANs; nil means 127.0.0.1 for a certificate
	// good for server authentication, none otherwise.
	IPs                 []net.IP
	NotBefore, NotAfter time.Time // zero: an hour ago, a day from now
}

// NewCA makes a certificate authority whose common name is name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, Pool: pool}
}

// Issue returns a certificate the CA signed for spec, with its key.
func (ca *CA) Issue(t testing.TB, spec Spec) tls.Certificate {
	t.Helper()
	return issue(t, spec, ca.Cert, ca.Key)
}

// IssueFiles writes a certificate the CA signed for spec and its key as
// PEM files <name>.pem and <name>.key in dir.
func (ca *CA) IssueFiles(t testing.TB, dir, name string, spec Spec) (certFile, keyFile string) {
	t.Helper()
	return WriteFiles(t, dir, name, ca.Issue(t, spec))
}

// File writes the CA's certificate as a PEM file <name> in dir.
func (ca *CA) File(t testing.TB, dir, name string) string {
	t.Helper()
	return writePEM(t, filepath.Join(dir, name), "CERTIFICATE", ca.Cert.Raw)
}

// SelfSigned returns a self-signed certificate for spec, with its key.
func SelfSigned(t testing.TB, spec Spec) tls.Certificate {
	t.Helper()
	return issue(t, spec, nil, nil)
}

// WriteFiles writes a certificate and its key as PEM files <name>.pem and
// <name>.key in dir.
func WriteFiles(t testing.TB, dir, name string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	kder, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", c.Certificate[0]),
		writePEM(t, filepath.Join(dir, name+".key"), "EC PRIVATE KEY", kder)
}

func issue(t testing.TB, spec Spec, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: spec.CN},
		NotBefore: spec.NotBefore, NotAfter: spec.NotAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		DNSNames: spec.DNS, IPAddresses: spec.IPs}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	server, client := spec.Server, spec.Client
	if !server && !client {
		server, client = true, true
	}
	if server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		if spec.IPs == nil {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
	}
	if client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// serial returns a random serial number, so that no two certificates of
// one issuer share one.
func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n.Add(n, big.NewInt(1))
}

func writePEM(t testing.TB, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
