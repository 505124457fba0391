package nodetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/condamesh/condamesh/node"
)

// Test nodes listen on 127.0.0.1 ports below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range) instead of port 0. A crashed or stopped
// member restarts on its addresses (its peers know them). Had its ports
// come from the ephemeral range, any outgoing connection on the machine
// (another test package's client, nginx, rattler) could have been given
// one of them as its source port in the meantime, and the restart would
// fail with "address already in use" for as long as that connection or
// its TIME_WAIT lasted: TestLinearizability failed so in CI. Below the
// range only explicit binds take ports; those of other test processes
// probe at random among some 16,000 and skip ports in use.

// portSpan is how many ports below the ephemeral range test nodes use.
const portSpan = 16384

// staticPorts is the range test ports are drawn from, [lo, hi); ok is
// false when the ephemeral range leaves no room below it.
func staticPorts() (lo, hi int, ok bool) {
	low := 32768 // Linux's default lower bound
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	lo, hi = max(1024, low-portSpan), low
	return lo, hi, hi-lo >= 1024
}

// freePort draws a port below the ephemeral range that is free on
// 127.0.0.1 for both TCP and UDP (gossip uses both). It returns 0 (the
// kernel picks) when there is no such range or no free port was found.
func freePort() int {
	lo, hi, ok := staticPorts()
	if !ok {
		return 0
	}
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		_ = ln.Close()
		if err != nil {
			continue
		}
		_ = pc.Close()
		return p
	}
	return 0
}

// withStaticPorts returns cfg with each 127.0.0.1 address on port 0 moved
// to a free port below the ephemeral range, and whether any was moved.
func withStaticPorts(cfg node.Config) (node.Config, bool) {
	moved := false
	for _, a := range []*string{&cfg.HTTPAddr, &cfg.RaftAddr, &cfg.GossipAddr} {
		host, port, err := net.SplitHostPort(*a)
		if err != nil || host != "127.0.0.1" || port != "0" {
			continue
		}
		if p := freePort(); p != 0 {
			*a, moved = net.JoinHostPort(host, strconv.Itoa(p)), true
		}
	}
	return cfg, moved
}

// addrInUse reports a bind that failed because the address is taken
// (memberlist formats its listener errors with %v, hence the text).
func addrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// newOnStaticPorts is node.New on ports drawn by withStaticPorts; a port
// taken between the draw and the bind (another test process drew it too)
// is drawn again.
func newOnStaticPorts(ctx context.Context, cfg node.Config) (*node.Node, error) {
	var errs []error
	for range 5 {
		c, moved := withStaticPorts(cfg)
		n, err := node.New(ctx, c)
		if err == nil {
			return n, nil
		}
		errs = append(errs, err)
		if !moved || !addrInUse(err) {
			break
		}
	}
	return nil, fmt.Errorf("after %d tries: %w", len(errs), errors.Join(errs...))
}
