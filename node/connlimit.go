package node

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// capListener holds at most max connections open at once, and at most
// perIP from one client address (0: no such bound), so one client cannot
// take every slot. A connection over a cap is accepted and closed at once
// rather than left in the kernel's backlog, so the listener keeps draining
// it and the clients over the cap fail fast instead of timing out.
type capListener struct {
	net.Listener
	slots   chan struct{}
	perIP   int
	mu      sync.Mutex
	byIP    map[netip.Addr]int
	log     *slog.Logger
	refused atomic.Int64
	lastLog atomic.Int64 // unix seconds of the last "refusing" log line
}

func newCapListener(ln net.Listener, max, perIP int, log *slog.Logger) *capListener {
	return &capListener{Listener: ln, slots: make(chan struct{}, max), perIP: perIP, byIP: map[netip.Addr]int{}, log: log}
}

// takeIP counts a connection of a, or reports that a is at its cap.
func (l *capListener) takeIP(a netip.Addr) bool {
	if l.perIP <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byIP[a] >= l.perIP {
		return false
	}
	l.byIP[a]++
	return true
}

func (l *capListener) releaseIP(a netip.Addr) {
	if l.perIP <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byIP[a]--; l.byIP[a] <= 0 {
		delete(l.byIP, a)
	}
}

func remoteAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteAddr(c)
		if !l.takeIP(ip) {
			l.refuse(c, "per-client connection cap reached: refusing connections", "max_conns_per_ip", l.perIP)
			continue
		}
		select {
		case l.slots <- struct{}{}:
			s := &slot{release: func() { <-l.slots; l.releaseIP(ip) }}
			if tc, ok := c.(*net.TCPConn); ok {
				// Keep *net.TCPConn's methods (ReadFrom for sendfile,
				// CloseWrite for a graceful close) visible.
				return &cappedTCPConn{TCPConn: tc, slot: s}, nil
			}
			return &cappedConn{Conn: c, slot: s}, nil
		default:
			l.releaseIP(ip)
			l.refuse(c, "connection cap reached: refusing connections", "max_conns", cap(l.slots))
		}
	}
}

// refuse closes c, logging at most once a second.
func (l *capListener) refuse(c net.Conn, msg, capName string, capValue int) {
	_ = c.Close()
	n := l.refused.Add(1)
	if now := time.Now().Unix(); l.lastLog.Swap(now) != now {
		l.log.Warn(msg, capName, capValue, "refused_total", n)
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
