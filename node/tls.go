package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// loadTLS reads the node's certificate, key and CA (nil, nil without
// TLS). The result is cluster.Config.TLS: Certificates, and with a CA,
// RootCAs and ClientCAs. It refuses, with the file at fault, what could
// not work: unreadable files, a key that does not match, a CA file with
// no certificate, a certificate the CA does not verify or that cannot
// serve as a client certificate when node-to-node TLS is mutual.
func loadTLS(cfg Config) (*tls.Config, error) {
	if cfg.TLSCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("node: config: tls cert %s, key %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, err)
	}
	leaf := cert.Leaf // parsed by LoadX509KeyPair
	if leaf == nil {
		return nil, fmt.Errorf("node: config: tls cert %s: no certificate", cfg.TLSCertFile)
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if cfg.TLSCAFile == "" {
		return base, nil
	}
	pem, err := os.ReadFile(cfg.TLSCAFile)
	if err != nil {
		return nil, fmt.Errorf("node: config: tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("node: config: tls ca %s: no PEM certificate in it", cfg.TLSCAFile)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("node: config: tls cert %s: intermediate: %w", cfg.TLSCertFile, err)
		}
		inter.AddCert(c)
	}
	// The peers verify this certificate as a server's and as a client's.
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
		var inv x509.CertificateInvalidError
		switch {
		case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
			return nil, fmt.Errorf("node: config: tls cert %s: needs the serverAuth and clientAuth extended key usages (nodes present it as server and as client): %w", cfg.TLSCertFile, err)
		case err != nil:
			return nil, fmt.Errorf("node: config: tls cert %s is not verified by tls ca %s (every node's certificate must be): %w", cfg.TLSCertFile, cfg.TLSCAFile, err)
		}
	}
	base.RootCAs, base.ClientCAs = pool, pool
	return base, nil
}

// publicTLS is the HTTP listener's side of base: HTTP/2 and HTTP/1.1 by
// ALPN; a client certificate is asked for but not required (conda clients
// have none), and one given must verify against the CA: PeerService
// accepts only callers with a verified one.
func publicTLS(base *tls.Config) *tls.Config {
	s := &tls.Config{
		Certificates: base.Certificates,
		ClientCAs:    base.ClientCAs,
		MinVersion:   base.MinVersion,
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if s.ClientCAs != nil {
		s.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return s
}
