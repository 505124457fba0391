// Package testcert makes throwaway certificate authorities and node
// certificates for tests of TLS: ECDSA P-256 keys, PEM files in
// t.TempDir(), certificates for 127.0.0.1, ::1 and localhost.
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

// CA is a certificate authority that lives for one test.
type CA struct {
	Cert *x509.Certificate
	// Pool holds Cert.
	Pool *x509.CertPool
	// File is Cert in PEM.
	File string
	key  *ecdsa.PrivateKey
	dir  string
}

// Files are the PEM files of a certificate issued by a CA.
type Files struct {
	Cert, Key string
	// CA is the issuing CA's certificate.
	CA string
}

// NewCA makes a CA named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := template(t, name)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testcert: CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testcert: CA: %v", err)
	}
	ca := &CA{Cert: cert, Pool: x509.NewCertPool(), key: key, dir: t.TempDir()}
	ca.Pool.AddCert(cert)
	ca.File = writePEM(t, ca.dir, name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

// Issue makes a certificate named name for 127.0.0.1, ::1 and localhost,
// with the given extended key usages (default: serverAuth and clientAuth,
// what a node needs), and writes it and its key as PEM files.
func (ca *CA) Issue(t testing.TB, name string, usages ...x509.ExtKeyUsage) Files {
	t.Helper()
	if len(usages) == 0 {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	key := newKey(t)
	tmpl := template(t, name)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = usages
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	tmpl.DNSNames = []string{"localhost"}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testcert: issue %s: %v", name, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testcert: issue %s: %v", name, err)
	}
	return Files{
		Cert: writePEM(t, ca.dir, name+".pem", "CERTIFICATE", der),
		Key:  writePEM(t, ca.dir, name+"-key.pem", "PRIVATE KEY", kder),
		CA:   ca.File,
	}
}

// Certificate loads f as a client certificate for tls.Config.
func (f Files) Certificate(t testing.TB) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatalf("testcert: load %s: %v", f.Cert, err)
	}
	return c
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testcert: key: %v", err)
	}
	return k
}

// template is a certificate named name with a random serial, valid from
// an hour ago for a day.
func template(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testcert: serial: %v", err)
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("testcert: write %s: %v", p, err)
	}
	return p
}
