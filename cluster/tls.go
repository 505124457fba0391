package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// handshakeTimeout bounds a node-to-node TLS handshake (Raft, both sides;
// PeerService calls, client side).
const handshakeTimeout = 10 * time.Second

// raftALPN is the application protocol Raft connections negotiate, so
// that a TLS client of another protocol (an HTTPS client sent to the Raft
// port) is refused in the handshake.
const raftALPN = "condamesh-raft"

// raftServerTLS is the Raft listener's side of base: mutual when base has
// ClientCAs.
func raftServerTLS(base *tls.Config) *tls.Config {
	s := &tls.Config{
		Certificates: base.Certificates,
		ClientCAs:    base.ClientCAs,
		MinVersion:   max(base.MinVersion, tls.VersionTLS12),
		NextProtos:   []string{raftALPN},
	}
	if base.ClientCAs != nil {
		s.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return s
}

// clientTLS is the dialing side of base (nil without TLS): it verifies the
// peer against base.RootCAs and presents base's certificate when asked.
func clientTLS(base *tls.Config, alpn []string) *tls.Config {
	if base == nil {
		return nil
	}
	return &tls.Config{
		Certificates: base.Certificates,
		RootCAs:      base.RootCAs,
		MinVersion:   max(base.MinVersion, tls.VersionTLS12),
		NextProtos:   alpn,
	}
}

// mutualTLS reports whether node-to-node calls need a verified client
// certificate.
func (c *Cluster) mutualTLS() bool { return c.cfg.TLS != nil && c.cfg.TLS.ClientCAs != nil }

// verifiedPeer reports whether r came over TLS with a client certificate
// that the listener verified (against the cluster CA; the node's HTTP
// listener must verify client certificates it is given).
func verifiedPeer(r *http.Request) bool {
	return r.TLS != nil && len(r.TLS.VerifiedChains) > 0
}

// handshakeListener is the Raft TLS listener: each accepted connection
// completes its handshake within handshakeTimeout, on its first Read or
// Write (in the transport's goroutine for that connection, not in Accept).
type handshakeListener struct {
	net.Listener // a tls listener
	log          *slog.Logger
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &handshakeConn{Conn: c.(*tls.Conn), log: l.log}, nil
}

type handshakeConn struct {
	*tls.Conn
	once sync.Once
	err  error
	log  *slog.Logger
}

func (c *handshakeConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		if err := c.HandshakeContext(ctx); err != nil {
			c.log.Warn("raft connection refused: TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			c.err = fmt.Errorf("cluster: raft TLS handshake with %s: %w", c.RemoteAddr(), err)
			_ = c.Conn.Close()
		}
	})
	return c.err
}

func (c *handshakeConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *handshakeConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
