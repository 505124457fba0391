package nodetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/condamesh/condamesh/node"
)

// Cluster is a set of test nodes joined into one cluster.
type Cluster struct {
	Nodes []*Node
	t     testing.TB
}

// WithVoters sets the number of voters the cluster aims for.
func WithVoters(v int) Option { return func(c *node.Config) { c.Voters = v } }

// WithProposeTimeout bounds a node's replicated writes (a write without a
// leader answers 503 after it).
func WithProposeTimeout(d time.Duration) Option { return func(c *node.Config) { c.ProposeTimeout = d } }

// WithSite sets a node's site.
func WithSite(s string) Option { return func(c *node.Config) { c.Site = s } }

// NewCluster starts n nodes through the same wiring as `serve`: the first
// bootstraps (and creates the admin user), the others start with Join set
// to its gossip address. It returns once every node is ready (knows the
// leader and has applied what it committed) and min(n, voters) nodes are
// voters.
func NewCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	first := Start(t, opts...)
	c.Nodes = append(c.Nodes, first)
	for i := 1; i < n; i++ {
		c.Add(t, opts...)
	}
	voters := first.cfg.Voters
	if voters == 0 {
		voters = 3
	}
	c.WaitVoters(t, min(n, voters))
	return c
}

// Add starts one more node that joins the cluster.
func (c *Cluster) Add(t testing.TB, opts ...Option) *Node {
	t.Helper()
	dir := t.TempDir()
	cfg := node.DefaultLocalConfig(dir)
	cfg.Logger = c.Nodes[0].cfg.Logger
	cfg.CommitTimeout = TestCommitTimeout
	for _, o := range opts {
		o(&cfg)
	}
	for _, n := range c.Nodes {
		if !n.crashed {
			cfg.Join = append(cfg.Join, n.Addrs().Gossip)
			break
		}
	}
	// Every node of a cluster has the same API key secret.
	cfg.API.KeySecret = c.Nodes[0].KeySecret()
	tn := startWith(t, dir, cfg)
	c.Nodes = append(c.Nodes, tn)
	return tn
}

// Restart restarts n (crashed or stopped) on its data directory and
// addresses, and puts the new node in n's place.
func (c *Cluster) Restart(t testing.TB, n *Node) *Node {
	t.Helper()
	back := n.Restart(t)
	c.replace(n, back)
	return back
}

func (c *Cluster) replace(old, n *Node) {
	for i := range c.Nodes {
		if c.Nodes[i] == old {
			c.Nodes[i] = n
		}
	}
}

// RestartMoved restarts n on its data directory on new ports (a node
// whose address changed) and puts the new node in n's place.
func (c *Cluster) RestartMoved(t testing.TB, n *Node) *Node {
	t.Helper()
	n.Stop()
	back := startWith(t, n.Dir, n.cfg) // the configured ports: 0
	c.replace(n, back)
	return back
}

// RestartAll stops every node, then starts them all again on their data
// directories and addresses, together (a first node alone has no quorum).
func (c *Cluster) RestartAll(t testing.TB) {
	t.Helper()
	for _, n := range c.Nodes {
		n.Stop()
	}
	for i, n := range c.Nodes {
		c.Nodes[i] = launch(t, n.Dir, n.restartConfig())
	}
	for _, n := range c.Nodes {
		n.waitServing(t)
	}
}

// Live returns the nodes that are not stopped or crashed.
func (c *Cluster) Live() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if !n.crashed && !n.stopped() {
			out = append(out, n)
		}
	}
	return out
}

// Leader waits until one live node leads (and is ready) and returns it.
func (c *Cluster) Leader(t testing.TB) *Node {
	t.Helper()
	var leader *Node
	c.poll(t, 30*time.Second, "a leader", func() bool {
		for _, n := range c.Live() {
			if n.Cluster().IsLeader() && n.Cluster().Ready() {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

// Followers returns the live nodes that do not lead.
func (c *Cluster) Followers(t testing.TB) []*Node {
	t.Helper()
	l := c.Leader(t)
	var out []*Node
	for _, n := range c.Live() {
		if n != l {
			out = append(out, n)
		}
	}
	return out
}

// WaitVoters waits until the leader's Raft configuration has want voters.
func (c *Cluster) WaitVoters(t testing.TB, want int) {
	t.Helper()
	c.poll(t, 60*time.Second, fmt.Sprintf("%d voters", want), func() bool {
		l := c.Leader(t)
		nodes, err := l.Cluster().Nodes(context.Background())
		if err != nil {
			return false
		}
		v := 0
		for _, n := range nodes {
			if n.Voter {
				v++
			}
		}
		return v == want
	})
}

// WaitApplied waits until every live node has applied what the leader's
// state machine has applied. (Not the leader's last log index: Raft's
// configuration changes, barriers and no-ops never reach the state
// machine, so a log that ends with one is never "applied" up to its end.)
func (c *Cluster) WaitApplied(t testing.TB) {
	t.Helper()
	want := c.Leader(t).Cluster().AppliedIndex()
	c.poll(t, 30*time.Second, fmt.Sprintf("every node at index %d", want), func() bool {
		for _, n := range c.Live() {
			if n.Cluster().AppliedIndex() < want {
				return false
			}
		}
		return true
	})
}

func (c *Cluster) poll(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	Eventually(t, d, "cluster: "+what, ok)
}

// Eventually polls ok every 20 ms until it holds, failing t with "no
// <what>" if it does not within d.
func Eventually(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
