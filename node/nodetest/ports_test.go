package nodetest

import (
	"net"
	"strconv"
	"testing"
)

// TestNodePortsBelowEphemeralRange: a node's HTTP, Raft and gossip ports
// are below the kernel's ephemeral range, so that no outgoing connection
// can take one of them while the node is down, and a crashed node binds
// them again on restart.
func TestNodePortsBelowEphemeralRange(t *testing.T) {
	lo, hi, ok := staticPorts()
	if !ok {
		t.Fatalf("no room below the ephemeral range (%d-%d)", lo, hi)
	}
	n := Start(t)
	check := func(n *Node) map[string]int {
		t.Helper()
		a := n.Addrs()
		ports := map[string]int{}
		for name, addr := range map[string]string{"http": a.HTTP, "raft": a.Raft, "gossip": a.Gossip} {
			_, ps, err := net.SplitHostPort(addr)
			if err != nil {
				t.Fatalf("%s address %q: %v", name, addr, err)
			}
			p, _ := strconv.Atoi(ps)
			if p < lo || p >= hi {
				t.Errorf("%s port %d is not in [%d, %d) below the ephemeral range", name, p, lo, hi)
			}
			ports[name] = p
		}
		return ports
	}
	before := check(n)
	n.Crash()
	back := n.Restart(t)
	after := check(back)
	for name, p := range before {
		if after[name] != p {
			t.Errorf("%s port %d after the restart, want %d", name, after[name], p)
		}
	}
}
