package node

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// capListener holds at most max connections open at once. A connection
// over the cap is accepted and closed at once rather than left in the
// kernel's backlog, so the listener keeps draining it and the clients
// over the cap fail fast instead of timing out.
type capListener struct {
	net.Listener
	slots   chan struct{}
	log     *slog.Logger
	refused atomic.Int64
	lastLog atomic.Int64 // unix seconds of the last "refusing" log line
}

func newCapListener(ln net.Listener, max int, log *slog.Logger) *capListener {
	return &capListener{Listener: ln, slots: make(chan struct{}, max), log: log}
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			s := &slot{release: func() { <-l.slots }}
			if tc, ok := c.(*net.TCPConn); ok {
				// Keep *net.TCPConn's methods (ReadFrom for sendfile,
				// CloseWrite for a graceful close) visible.
				return &cappedTCPConn{TCPConn: tc, slot: s}, nil
			}
			return &cappedConn{Conn: c, slot: s}, nil
		default:
			_ = c.Close()
			n := l.refused.Add(1)
			if now := time.Now().Unix(); l.lastLog.Swap(now) != now {
				l.log.Warn("connection cap reached: refusing connections", "max_conns", cap(l.slots), "refused_total", n)
			}
		}
	}
}

// slot is a connection's place under the cap, freed once.
type slot struct {
	once    sync.Once
	release func()
}

func (s *slot) free(err error) error {
	s.once.Do(s.release)
	return err
}

// cappedConn frees its slot on its first Close.
type cappedConn struct {
	net.Conn
	slot *slot
}

func (c *cappedConn) Close() error { return c.slot.free(c.Conn.Close()) }

// cappedTCPConn is cappedConn for TCP, keeping every *net.TCPConn method.
type cappedTCPConn struct {
	*net.TCPConn
	slot *slot
}

func (c *cappedTCPConn) Close() error { return c.slot.free(c.TCPConn.Close()) }
