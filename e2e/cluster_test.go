package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLocalClusterOfThree runs deploy/local-cluster.sh with three real
// processes: they form one cluster (three voters); a channel created on
// node 1 and packages uploaded on node 2 are served by node 3 with the same
// index bytes; rattler solves against node 2; node 3 answers a clear error,
// not a 500, for package bytes it does not hold (peer transfer is the next
// issue); after the leader is SIGKILLed, writes through a survivor work
// again within the failover time; restarted on its data without --join, the
// killed node finds its peers and catches up.
func TestLocalClusterOfThree(t *testing.T) {
	c := startLocalCluster(t, 3)
	key := c.file("admin-key")
	nodes := make([]*server, 3)
	for i := range nodes {
		nodes[i] = &server{t: t, url: c.url(i + 1)}
	}
	var list []map[string]any
	waitFor(t, 30*time.Second, "three voters", func() bool {
		code, b := nodes[0].do("GET", "/api/cluster/nodes", key, nil)
		if code != http.StatusOK || json.Unmarshal(b, &list) != nil || len(list) != 3 {
			return false
		}
		for _, n := range list {
			if n["voter"] != true || n["status"] != "alive" {
				return false
			}
		}
		return true
	})
	if code, b := nodes[0].do("POST", "/api/channels", key, strings.NewReader(`{"name":"meshchan","private":false}`)); code != http.StatusCreated {
		t.Fatalf("create on node 1: %d %s", code, b)
	}
	// The upload on node 2 follows the create on node 1 at once: a write
	// on a follower waits for the read index, so node 2 knows the channel.
	pkgs := testPackages(t)
	files := map[string][]byte{}
	for name, b := range pkgs {
		files[path.Base(name)] = b
	}
	if code, b := nodes[1].uploadMultipartKey("meshchan", key, files); code != http.StatusCreated {
		t.Fatalf("upload on node 2: %d %s", code, b)
	}
	waitFor(t, 30*time.Second, "the same repodata on nodes 2 and 3", func() bool {
		c2, b2 := nodes[1].do("GET", "/get/meshchan/noarch/repodata.json", "", nil)
		c3, b3 := nodes[2].do("GET", "/get/meshchan/noarch/repodata.json", "", nil)
		return c2 == 200 && c3 == 200 && bytes.Equal(b2, b3) && bytes.Contains(b3, []byte("bar-2.0-0.conda"))
	})
	got, err := solve(t, []string{"foo"}, []string{nodes[1].url + "/get/meshchan"}, []string{"linux-64", "noarch"})
	if err != nil || len(got) != 3 {
		t.Fatalf("rattler solve on node 2: %v %v", got, err)
	}
	for name := range pkgs {
		code, b := nodes[2].do("GET", "/get/meshchan/"+name, "", nil)
		if code != http.StatusNotFound || !bytes.Contains(b, []byte("bytes are not on this node")) {
			t.Fatalf("node 3 asked for %s it lacks: %d %q, want 404 saying the bytes are elsewhere", name, code, b)
		}
	}
	// Index files are byte-identical with the same ETags on every node.
	for _, f := range []string{"noarch/repodata.json", "linux-64/repodata.json.zst", "channeldata.json"} {
		var etags []string
		var bodies [][]byte
		for _, n := range nodes {
			resp, err := http.Get(n.url + "/get/meshchan/" + f)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s on %s: %d", f, n.url, resp.StatusCode)
			}
			etags, bodies = append(etags, resp.Header.Get("ETag")), append(bodies, b)
		}
		for i := 1; i < len(nodes); i++ {
			if etags[i] != etags[0] || !bytes.Equal(bodies[i], bodies[0]) {
				t.Fatalf("%s differs between nodes: ETags %v", f, etags)
			}
		}
	}
	// SIGKILL the leader; a survivor takes writes again.
	leader := -1
	for _, n := range list {
		if n["raft_state"] == "leader" {
			for j := range nodes {
				if nodes[j].url == n["http_url"] {
					leader = j
				}
			}
		}
	}
	if leader < 0 {
		t.Fatalf("no leader in %v", list)
	}
	if err := syscall.Kill(c.pid(leader+1), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	survivor := nodes[(leader+1)%3]
	var after string
	waitFor(t, 30*time.Second, "a write after the leader's SIGKILL", func() bool {
		after = fmt.Sprintf("after-%d", time.Now().UnixNano())
		code, _ := survivor.do("POST", "/api/channels", key, strings.NewReader(`{"name":"`+after+`","private":false}`))
		return code == http.StatusCreated
	})
	t.Logf("first acknowledged write %v after the leader's SIGKILL", time.Since(killed))

	// The killed node restarts on its data without --join (it remembers
	// its peers) and catches up: it serves what was written while it was
	// down.
	u, err := url.Parse(nodes[leader].url)
	if err != nil {
		t.Fatal(err)
	}
	httpPort, _ := strconv.Atoi(u.Port())
	cmd := exec.Command(binPath, "serve", "--data-dir", filepath.Join(c.dir, fmt.Sprintf("node%d", leader+1)),
		"--http-addr", u.Host, "--raft-addr", fmt.Sprintf("127.0.0.1:%d", httpPort+1), "--gossip-addr", fmt.Sprintf("127.0.0.1:%d", httpPort+2))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("restarted node's log:\n%s", logs.String())
		}
	})
	waitFor(t, 60*time.Second, "the restarted node serving the channel written while it was down", func() bool {
		req, _ := http.NewRequest("GET", nodes[leader].url+"/api/channels/"+after, nil)
		req.Header.Set("X-API-Key", key)
		resp, err := http.DefaultClient.Do(req) // refused until it listens
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}
