package node_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
)

// The cluster scenarios of issue 10: real nodes on loopback through the
// same wiring as `serve` (nodetest.NewCluster), one scenario per test.

// restNode is one element of GET /api/cluster/nodes.
type restNode struct {
	ID           string `json:"id"`
	Site         string `json:"site"`
	HTTPURL      string `json:"http_url"`
	RaftAddr     string `json:"raft_addr"`
	GossipAddr   string `json:"gossip_addr"`
	RaftState    string `json:"raft_state"`
	Status       string `json:"status"`
	AppliedIndex uint64 `json:"applied_index"`
	Version      string `json:"version"`
}

// restNodes asks base for GET /api/cluster/nodes as the admin.
func restNodes(t *testing.T, base string) []restNode {
	t.Helper()
	st, b := call(t, base, nodetest.AdminKey, http.MethodGet, "/api/cluster/nodes", "", nil)
	if st != http.StatusOK {
		t.Fatalf("GET /api/cluster/nodes on %s: %d %s", base, st, b)
	}
	// Every field the issue names is present in every object.
	var raw []map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("nodes: %v: %s", err, b)
	}
	for _, o := range raw {
		for _, k := range []string{"id", "site", "http_url", "raft_addr", "gossip_addr", "raft_state", "status", "applied_index", "version"} {
			if _, ok := o[k]; !ok {
				t.Fatalf("node object lacks %q: %v", k, o)
			}
		}
	}
	var out []restNode
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("nodes: %v: %s", err, b)
	}
	return out
}

// raftStates counts the nodes of a cluster's view by raft_state.
func raftStates(nodes []restNode) map[string]int {
	m := map[string]int{}
	for _, n := range nodes {
		m[n.RaftState]++
	}
	return m
}

// eventually is nodetest.Eventually.
var eventually = nodetest.Eventually

// TestClusterJoinFiveVotersTwoNonVoters: seven nodes with Voters=5 give
// five voters (one leader, four followers) and two non-voters, in the
// cluster's Raft view and in GET /api/cluster/nodes on any node.
func TestClusterJoinFiveVotersTwoNonVoters(t *testing.T) {
	c := nodetest.NewCluster(t, 7, nodetest.WithVoters(5), nodetest.WithSite("eu"))
	c.WaitApplied(t)
	leader := c.Leader(t)
	want := map[string]int{"leader": 1, "follower": 4, "non-voter": 2}
	nodes, err := leader.Cluster().Nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, n := range nodes {
		if n.Voter {
			voters++
		}
	}
	if voters != 5 || len(nodes) != 7 {
		t.Fatalf("leader's view: %d nodes, %d voters; want 7 and 5", len(nodes), voters)
	}
	byID := map[string]*nodetest.Node{}
	for _, n := range c.Nodes {
		byID[n.ID()] = n
	}
	for _, asked := range []*nodetest.Node{leader, c.Followers(t)[0], c.Nodes[6]} {
		var got []restNode
		eventually(t, 10*time.Second, "5 voters and 2 non-voters in "+asked.ID()+"'s view", func() bool {
			got = restNodes(t, asked.URL())
			s := raftStates(got)
			return len(got) == 7 && s["leader"] == want["leader"] && s["follower"] == want["follower"] && s["non-voter"] == want["non-voter"]
		})
		for _, n := range got {
			tn := byID[n.ID]
			if tn == nil {
				t.Fatalf("unknown node %s in %s's view", n.ID, asked.ID())
			}
			a := tn.Addrs()
			if n.Site != "eu" || n.HTTPURL != tn.URL() || n.RaftAddr != a.Raft || n.GossipAddr != a.Gossip || n.Status != "alive" || n.AppliedIndex == 0 {
				t.Fatalf("%s's view of %s: %+v (addrs %+v, url %s)", asked.ID(), n.ID, n, a, tn.URL())
			}
			if got := tn.Cluster().LocalInfo().RaftState; got != n.RaftState {
				t.Fatalf("%s says it is %s, %s's view says %s", n.ID, got, asked.ID(), n.RaftState)
			}
		}
	}
}

// TestClusterHealth: /health/ready answers 200 on a follower that has a
// leader and is caught up, 503 on a node that has no leader; /health/live
// answers 200 while the process runs, leader or not.
func TestClusterHealth(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	c.WaitApplied(t)
	for _, n := range c.Nodes {
		for _, p := range []string{"/health/ready", "/health/live"} {
			if st, b := call(t, n.URL(), "", http.MethodGet, p, "", nil); st != http.StatusOK {
				t.Fatalf("%s on %s: %d %s", p, n.ID(), st, b)
			}
		}
	}
	// Crash two of three: the survivor has no quorum, so no leader.
	f := c.Followers(t)[0]
	for _, n := range c.Nodes {
		if n != f {
			n.Crash()
		}
	}
	eventually(t, 10*time.Second, "503 from /health/ready without a leader", func() bool {
		st, _ := call(t, f.URL(), "", http.MethodGet, "/health/ready", "", nil)
		return st == http.StatusServiceUnavailable
	})
	if st, b := call(t, f.URL(), "", http.MethodGet, "/health/live", "", nil); st != http.StatusOK {
		t.Fatalf("/health/live without a leader: %d %s", st, b)
	}
}

// TestClusterOtherClusterRefused: a node of another cluster is refused at
// the gossip merge in both directions, with 409 and a message naming the
// cause, and neither cluster's membership changes.
func TestClusterOtherClusterRefused(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	for _, tc := range []struct {
		name    string
		secret  bool // the other cluster has the same API key secret
		message string
	}{
		{"same secret", true, "belongs to cluster"},
		{"other secret", false, "belongs to cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []nodetest.Option
			if tc.secret {
				secret := c.Nodes[0].KeySecret()
				opts = append(opts, func(cfg *node.Config) { cfg.API.KeySecret = secret })
			}
			other := nodetest.Start(t, opts...)
			for _, tc2 := range []struct {
				name     string
				asked    *nodetest.Node
				peerAddr string
			}{
				{"single node joins the cluster", other, c.Nodes[1].Addrs().Gossip},
				{"cluster member joins the single node", c.Nodes[1], other.Addrs().Gossip},
			} {
				st, b := call(t, tc2.asked.URL(), nodetest.AdminKey, http.MethodPost, "/api/cluster/join", "application/json",
					strings.NewReader(`{"peers":["`+tc2.peerAddr+`"]}`))
				if st != http.StatusConflict || !strings.Contains(string(b), tc.message) {
					t.Fatalf("%s: %d %s; want 409 naming %q", tc2.name, st, b, tc.message)
				}
			}
			// Neither membership changes: 3 and 1 nodes, in Raft and gossip,
			// over a few gossip rounds.
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				if got := restNodes(t, c.Nodes[0].URL()); len(got) != 3 {
					t.Fatalf("the cluster lists %d nodes: %+v", len(got), got)
				}
				if got := restNodes(t, other.URL()); len(got) != 1 {
					t.Fatalf("the single node lists %d nodes: %+v", len(got), got)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}
