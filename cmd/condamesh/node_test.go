package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/node/nodetest"
)

// TestNodeCommands runs `condamesh node` against a two-node cluster: list
// and status print the objects GET /api/cluster/nodes answers (-o json)
// or a table; remove of an unknown id and a join of a dead peer fail
// clearly; non-owners are refused.
func TestNodeCommands(t *testing.T) {
	c := nodetest.NewCluster(t, 2)
	n := c.Nodes[1]
	// The follower learns the promotion from the log a moment after the
	// leader: wait until its own view is settled, then compare.
	var rest []map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, n.URL()+"/api/cluster/nodes", nil)
		req.Header.Set("X-API-Key", nodetest.AdminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /api/cluster/nodes: %d %s", resp.StatusCode, body)
		}
		if err := json.Unmarshal(body, &rest); err != nil || len(rest) != 2 {
			t.Fatalf("REST nodes: %v %s", err, body)
		}
		if rest[0]["voter"] == true && rest[1]["voter"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower does not see two voters: %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, k := range []string{"id", "site", "http_url", "raft_addr", "gossip_addr", "raft_state", "status", "applied_index", "version"} {
		if _, ok := rest[0][k]; !ok {
			t.Fatalf("REST node lacks %q: %v", k, rest[0])
		}
	}
	out, errOut, code := cli(t, n, "node", "list", "-o", "json")
	if code != 0 {
		t.Fatalf("node list -o json: %d %s", code, errOut)
	}
	var cliNodes []map[string]any
	if err := json.Unmarshal([]byte(out), &cliNodes); err != nil {
		t.Fatalf("node list -o json output: %v\n%s", err, out)
	}
	ids := func(ns []map[string]any) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n["id"].(string)+"/"+n["raft_state"].(string)+"/"+n["status"].(string))
		}
		sort.Strings(out)
		return out
	}
	if a, b := ids(rest), ids(cliNodes); strings.Join(a, ",") != strings.Join(b, ",") {
		t.Fatalf("CLI nodes %v, REST nodes %v", b, a)
	}
	out, _, code = cli(t, n, "node", "list")
	if code != 0 || !strings.Contains(out, "RAFT") || !strings.Contains(out, c.Nodes[0].ID()) || !strings.Contains(out, "leader") {
		t.Fatalf("node list table: %d\n%s", code, out)
	}
	out, _, code = cli(t, n, "node", "status", "-o", "json")
	var st map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st["id"] != n.ID() || st["ready"] != true {
		t.Fatalf("node status -o json: %d %s", code, out)
	}
	if _, errOut, code := cli(t, n, "node", "list", "-o", "yaml"); code != 2 || !strings.Contains(errOut, "want table or json") {
		t.Fatalf("bad -o: %d %s", code, errOut)
	}
	if _, errOut, code := cli(t, n, "node", "remove", "node-nosuch"); code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("remove unknown: %d %s", code, errOut)
	}
	if _, errOut, code := cli(t, n, "node", "join", "127.0.0.1:1"); code != 1 || !strings.Contains(errOut, "no peer answered") && !strings.Contains(errOut, "127.0.0.1:1") {
		t.Fatalf("join dead peer: %d %s", code, errOut)
	}
	var o, e bytes.Buffer
	if code := run(context.Background(), []string{"node", "list", "--server", n.URL(), "--api-key", "x"}, &o, &e); code != 1 || !strings.Contains(e.String(), "unauthenticated") {
		errOut := e.String()
		t.Fatalf("anonymous node list: %d %s", code, errOut)
	}
}
