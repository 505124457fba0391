package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Partition is a fault switch for tests: while it is cut, every byte
// between this node and its peers is lost in both directions (Raft
// connections, gossip packets and streams, node-to-node HTTP calls), as if
// the network between them failed; the node's public HTTP API keeps
// serving its clients. With Config.Partition nil (production) none of
// this is in the path.
type Partition struct {
	cut   atomic.Bool
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// NewPartition returns a switch that is healed (traffic flows).
func NewPartition() *Partition { return &Partition{conns: map[net.Conn]struct{}{}} }

// errPartitioned is what a cut link answers.
var errPartitioned = errors.New("cluster: network partitioned (test fault)")

// Cut cuts the node off: new connections and packets fail, open Raft
// connections are closed.
func (p *Partition) Cut() {
	p.cut.Store(true)
	p.mu.Lock()
	open := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		open = append(open, c)
	}
	p.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

// Heal lets traffic flow again.
func (p *Partition) Heal() { p.cut.Store(false) }

// IsCut reports whether the node is cut off.
func (p *Partition) IsCut() bool { return p != nil && p.cut.Load() }

// track wraps c so that Cut closes it and it fails while cut.
func (p *Partition) track(c net.Conn) net.Conn {
	pc := &partConn{Conn: c, p: p}
	p.mu.Lock()
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	if p.IsCut() {
		_ = pc.Close()
	}
	return pc
}

type partConn struct {
	net.Conn
	p *Partition
}

func (c *partConn) Read(b []byte) (int, error) {
	if c.p.IsCut() {
		return 0, errPartitioned
	}
	return c.Conn.Read(b)
}

func (c *partConn) Write(b []byte) (int, error) {
	if c.p.IsCut() {
		return 0, errPartitioned
	}
	return c.Conn.Write(b)
}

func (c *partConn) Close() error {
	c.p.mu.Lock()
	delete(c.p.conns, c)
	c.p.mu.Unlock()
	return c.Conn.Close()
}

// partitionedStream is Raft's stream layer behind the switch.
type partitionedStream struct {
	*streamLayer
	p *Partition
}

func (s partitionedStream) Accept() (net.Conn, error) {
	c, err := s.streamLayer.Accept()
	if err != nil {
		return nil, err
	}
	return s.p.track(c), nil
}

func (s partitionedStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if s.p.IsCut() {
		return nil, errPartitioned
	}
	c, err := s.streamLayer.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	return s.p.track(c), nil
}

// partitionedTransport is memberlist's network transport behind the
// switch: packets and streams are dropped both ways while cut.
type partitionedTransport struct {
	*memberlist.NetTransport
	p       *Partition
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
}

// newPartitionedTransport binds memberlist's transport (retrying a port
// 0 whose UDP twin is taken, as memberlist does) and puts it behind p.
func newPartitionedTransport(mc *memberlist.Config, p *Partition) (*partitionedTransport, error) {
	var nt *memberlist.NetTransport
	var err error
	for try := 0; try < 10; try++ {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger})
		if err == nil || mc.BindPort != 0 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip transport: %w", err)
	}
	t := &partitionedTransport{NetTransport: nt, p: p, packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		for {
			select {
			case pk := <-nt.PacketCh():
				if p.IsCut() {
					continue
				}
				select {
				case t.packets <- pk:
				case <-t.done:
					return
				}
			case <-t.done:
				return
			}
		}
	}()
	go func() {
		for {
			select {
			case c := <-nt.StreamCh():
				if p.IsCut() {
					_ = c.Close()
					continue
				}
				select {
				case t.streams <- c:
				case <-t.done:
					_ = c.Close()
					return
				}
			case <-t.done:
				return
			}
		}
	}()
	return t, nil
}

func (t *partitionedTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *partitionedTransport) StreamCh() <-chan net.Conn           { return t.streams }

func (t *partitionedTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.p.IsCut() {
		return time.Now(), nil // sent, and lost
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *partitionedTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *partitionedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.p.IsCut() {
		return nil, errPartitioned
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

func (t *partitionedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *partitionedTransport) Shutdown() error {
	close(t.done)
	// The pumps have stopped: drain the inner channels until the
	// transport's listeners exit, or one blocked handing over a packet
	// keeps NetTransport.Shutdown waiting for ever.
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-t.NetTransport.PacketCh():
			case c := <-t.NetTransport.StreamCh():
				if c != nil {
					_ = c.Close()
				}
			case <-stop:
				return
			}
		}
	}()
	err := t.NetTransport.Shutdown()
	close(stop)
	return err
}

// partitionedClient fails node-to-node calls while cut.
type partitionedClient struct {
	p    *Partition
	next http.RoundTripper
}

func (t partitionedClient) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.p.IsCut() {
		return nil, errPartitioned
	}
	return t.next.RoundTrip(r)
}
