package node_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node/nodetest"
)

// TestClusterProxyOnFollower: a proxy channel answers on a follower: the
// package and the index it fetches are recorded (a replicated proxy entry,
// proposed through the leader) and served; the record reaches every node.
func TestClusterProxyOnFollower(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	leader := c.Leader(t)
	f := c.Followers(t)[0]
	// The upstream: a local channel on the leader, which holds its bytes.
	if st, b := call(t, leader.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"origin","private":false}`)); st != http.StatusCreated {
		t.Fatalf("create origin: %d %s", st, b)
	}
	spec := condatest.Spec{Name: "viaproxy", Version: "1.0", Build: "0", Files: map[string]string{"share/x": "x\n"}}
	data, file := condatest.Conda(t, spec), condatest.Filename(spec, ".conda")
	if st, b := call(t, leader.URL(), nodetest.AdminKey, "POST", "/api/channels/origin/upload/"+file+"?sha256="+sha(data), "", bytes.NewReader(data)); st != http.StatusCreated {
		t.Fatalf("upload: %d %s", st, b)
	}
	body := `{"name":"px","private":false,"mirror_channel_url":"` + leader.URL() + `/get/origin","mirror_mode":"proxy"}`
	if st, b := call(t, f.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(body)); st != http.StatusCreated {
		t.Fatalf("create proxy on the follower: %d %s", st, b)
	}
	var got []byte
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, b := call(t, f.URL(), "", "GET", "/get/px/noarch/"+file, "", nil)
		if st == http.StatusOK {
			got = b
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxied package on the follower: %d %s", st, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the follower's proxy served other bytes")
	}
	c.WaitApplied(t)
	for _, n := range c.Nodes {
		if _, err := n.Catalog().ProxyEntry(t.Context(), "px", "noarch/"+file); err != nil {
			t.Fatalf("proxy entry on %s: %v", n.ID(), err)
		}
	}
}
