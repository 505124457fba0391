package node_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/node/nodetest"
)

// TestClusterJoinAndFollowerWrite: three nodes form one cluster (three
// voters); a channel created through a follower is visible on that
// follower as soon as the request returns (read-your-writes), and on every
// node after; the same error (409 on a duplicate) comes back from leader
// and follower.
func TestClusterJoinAndFollowerWrite(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	fs := c.Followers(t)
	if len(fs) != 2 {
		t.Fatalf("followers: %d", len(fs))
	}
	f := fs[0]
	st, body := call(t, f.URL(), nodetest.AdminKey, http.MethodPost, "/api/channels", "application/json", strings.NewReader(`{"name":"c1","private":false}`))
	if st != http.StatusCreated {
		t.Fatalf("create on follower: %d %s", st, body)
	}
	if st, body := call(t, f.URL(), nodetest.AdminKey, http.MethodGet, "/api/channels/c1", "", nil); st != http.StatusOK {
		t.Fatalf("read back on follower: %d %s", st, body)
	}
	for _, n := range c.Nodes {
		if st, _ := call(t, n.URL(), nodetest.AdminKey, http.MethodPost, "/api/channels", "application/json", strings.NewReader(`{"name":"c1","private":false}`)); st != http.StatusConflict {
			t.Fatalf("duplicate on %s: %d, want 409", n.ID(), st)
		}
	}
	c.WaitApplied(t)
	for _, n := range c.Nodes {
		if st, body := call(t, n.URL(), nodetest.AdminKey, http.MethodGet, "/api/channels/c1", "", nil); st != http.StatusOK {
			t.Fatalf("read on %s: %d %s", n.ID(), st, body)
		}
		if st, _ := call(t, n.URL(), "", http.MethodGet, "/health/ready", "", nil); st != http.StatusOK {
			t.Fatalf("ready on %s: %d", n.ID(), st)
		}
	}
	nodes, err := c.Nodes[0].Cluster().Nodes(context.Background())
	if err != nil || len(nodes) != 3 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
}
