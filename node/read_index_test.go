package node_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/node/nodetest"
)

// TestReadIndexOnQuietCluster: on a cluster whose last log entries are
// not commands (the membership changes that formed it; after a failover,
// the new leader's no-op and barrier), a consistent read and a write
// answer on every node at once, instead of waiting for an apply that only
// the next command would bring.
func TestReadIndexOnQuietCluster(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	hc := &http.Client{Timeout: 5 * time.Second}
	do := func(n *nodetest.Node, method, path, body string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, n.URL()+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-API-Key", nodetest.AdminKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s on %s: %v", method, path, n.ID(), err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	round := func(name string) {
		t.Helper()
		for i, n := range c.Live() {
			if st := do(n, http.MethodGet, "/api/channels?consistent=true", ""); st != http.StatusOK {
				t.Fatalf("consistent read on %s: %d", n.ID(), st)
			}
			ch := fmt.Sprintf("%s%d", name, i)
			if st := do(n, http.MethodPost, "/api/channels", `{"name":"`+ch+`","private":false}`); st != http.StatusCreated {
				t.Fatalf("create %s on %s: %d", ch, n.ID(), st)
			}
		}
	}
	round("quiet")
	l := c.Leader(t)
	l.Crash()
	c.Leader(t) // the new leader's last entries are its no-op and barrier
	round("failover")
}

// TestFollowerWriteSeesAcknowledgedWrites: a write on a follower checks
// the catalog (the channel exists, it does not yet) after every write the
// cluster acknowledged before it began, however far the follower trails:
// a channel created through the leader is at once patched, deleted and
// created again through a follower.
func TestFollowerWriteSeesAcknowledgedWrites(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	l, f := c.Leader(t), c.Followers(t)[0]
	for i := range 20 {
		ch := fmt.Sprintf("fresh%d", i)
		steps := []struct {
			n            *nodetest.Node
			method, path string
			body         string
			want         int
		}{
			{l, http.MethodPost, "/api/channels", `{"name":"` + ch + `","private":false}`, http.StatusCreated},
			{f, http.MethodPatch, "/api/channels/" + ch, `{"ttl":100}`, http.StatusOK},
			{l, http.MethodDelete, "/api/channels/" + ch, "", http.StatusOK},
			{f, http.MethodPost, "/api/channels", `{"name":"` + ch + `","private":false}`, http.StatusCreated},
		}
		for _, s := range steps {
			if st, body := call(t, s.n.URL(), nodetest.AdminKey, s.method, s.path, "application/json", strings.NewReader(s.body)); st != s.want {
				t.Fatalf("%s %s on %s: %d %s, want %d", s.method, s.path, s.n.ID(), st, body, s.want)
			}
		}
	}
}
