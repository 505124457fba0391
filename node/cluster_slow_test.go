//go:build !race

// These scenarios run in the normal test pass only: under the race
// detector, on two cores, their many in-process nodes miss the deadlines
// the scenarios assert (writes within 10 s of a crash, a leader right after
// a recovery); the race pass covers the same code through the other
// cluster tests.

package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/node/nodetest"
)

// TestClusterLeaderCrash: the leader is crashed (closed without a leave)
// while every node takes writes; a new leader is elected, every write
// acknowledged before (and after) is on every survivor, and writes keep
// working through each survivor. The crashed node restarted on its data
// catches up and serves the writes made while it was down.
func TestClusterLeaderCrash(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	old := c.Leader(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	writers := map[*nodetest.Node]*writer{}
	for i, n := range c.Nodes {
		w := &writer{base: n.URL(), prefix: fmt.Sprintf("w%d", i)}
		writers[n] = w
		wg.Add(1)
		go w.run(stop, &wg)
	}
	eventually(t, 10*time.Second, "writes on every node before the crash", func() bool {
		for _, w := range writers {
			if w.ackedCount() < 5 {
				return false
			}
		}
		return true
	})
	old.Crash()
	leader := c.Leader(t)
	if leader == old {
		t.Fatal("the crashed node still leads")
	}
	// Writes go on through each survivor.
	after := map[*nodetest.Node]int{}
	for n, w := range writers {
		after[n] = w.ackedCount()
	}
	eventually(t, 15*time.Second, "writes through every survivor after the crash", func() bool {
		for _, n := range c.Live() {
			if writers[n].ackedCount() < after[n]+5 {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()
	c.WaitApplied(t)
	var acked []string
	for _, w := range writers {
		acked = append(acked, w.acked...)
	}
	present := func(n *nodetest.Node, names []string) {
		t.Helper()
		for _, name := range names {
			if _, err := n.Catalog().Channel(t.Context(), name); err != nil {
				t.Fatalf("acknowledged channel %s on %s: %v", name, n.ID(), err)
			}
		}
	}
	for _, n := range c.Live() {
		present(n, acked)
	}
	// Writes while the crashed node is down, then its restart.
	for i, n := range c.Live() {
		name := fmt.Sprintf("while-down-%d", i)
		if st, b := call(t, n.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"`+name+`"}`)); st != 201 {
			t.Fatalf("write on %s while the old leader is down: %d %s", n.ID(), st, b)
		}
		acked = append(acked, name)
	}
	back := c.Restart(t, old)
	want := c.Leader(t).Cluster().AppliedIndex()
	eventually(t, 15*time.Second, "the restarted node at the leader's applied index", func() bool {
		return back.Cluster().AppliedIndex() >= want
	})
	present(back, acked)
	if st, b := call(t, back.URL(), nodetest.AdminKey, "GET", "/api/channels/while-down-0", "", nil); st != 200 {
		t.Fatalf("the restarted node serves a write made while it was down: %d %s", st, b)
	}
	if st, b := call(t, back.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"after-restart"}`)); st != 201 {
		t.Fatalf("write on the restarted node: %d %s", st, b)
	}
}

// TestClusterLostQuorumRecovered: two of three nodes crash; a write on
// the survivor answers 503 (no leader) after the propose timeout. The
// documented recovery: stop the survivor, write <data-dir>/raft/peers.json
// listing only it, start it: it leads alone with its data and takes
// writes; peers.json is renamed once applied. The crashed nodes, started
// again on their data, rejoin it.
func TestClusterLostQuorumRecovered(t *testing.T) {
	c := nodetest.NewCluster(t, 3, nodetest.WithProposeTimeout(2*time.Second))
	survivor := c.Followers(t)[0]
	if st, b := call(t, survivor.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"kept"}`)); st != 201 {
		t.Fatalf("write: %d %s", st, b)
	}
	c.WaitApplied(t)
	for _, n := range c.Nodes {
		if n != survivor {
			n.Crash()
		}
	}
	if st, b := call(t, survivor.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"lost"}`)); st != http.StatusServiceUnavailable {
		t.Fatalf("write without quorum: %d %s; want 503", st, b)
	}
	survivor.Stop()
	peers, err := json.Marshal([]map[string]any{{"id": survivor.ID(), "address": survivor.Addrs().Raft, "non_voter": false}})
	if err != nil {
		t.Fatal(err)
	}
	peersFile := filepath.Join(survivor.Dir, "raft", "peers.json")
	if err := os.WriteFile(peersFile, peers, 0o644); err != nil {
		t.Fatal(err)
	}
	back := c.Restart(t, survivor)
	if !back.Cluster().IsLeader() {
		t.Fatalf("the recovered node does not lead: %s", back.Cluster().LocalInfo().RaftState)
	}
	if _, err := os.Stat(peersFile + ".applied"); err != nil {
		t.Fatalf("peers.json not marked applied: %v", err)
	}
	for _, n := range restNodes(t, back.URL()) {
		if n.ID != back.ID() && n.RaftState != "none" {
			t.Fatalf("the recovered configuration lists %s (%s)", n.ID, n.RaftState)
		}
	}
	if st, b := call(t, back.URL(), nodetest.AdminKey, "GET", "/api/channels/kept", "", nil); st != 200 {
		t.Fatalf("data after the recovery: %d %s", st, b)
	}
	// Writes need the leader's barrier of its term applied (a replay of
	// the whole log after the restart): wait until the node says ready.
	eventually(t, 30*time.Second, "the recovered node ready", func() bool {
		st, _ := call(t, back.URL(), "", http.MethodGet, "/health/ready", "", nil)
		return st == http.StatusOK
	})
	if st, b := call(t, back.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"after-recovery"}`)); st != 201 {
		t.Fatalf("write after the recovery: %d %s", st, b)
	}
	// The crashed nodes, restarted on their data, are added back by the
	// recovered leader and catch up.
	for _, n := range c.Nodes {
		if n != back {
			c.Restart(t, n)
		}
	}
	c.WaitVoters(t, 3)
	c.WaitApplied(t)
	for _, n := range c.Nodes {
		if st, b := call(t, n.URL(), nodetest.AdminKey, "GET", "/api/channels/after-recovery", "", nil); st != 200 {
			t.Fatalf("a write made after the recovery on %s: %d %s", n.ID(), st, b)
		}
	}
}

// TestClusterSnapshotInstall: the leader snapshots a catalog of 100,000
// package records (written 1,000 per command) and compacts its log; a
// node that joins then installs the snapshot and has every record.
func TestClusterSnapshotInstall(t *testing.T) {
	const batches, perBatch = 100, 1000
	c := nodetest.NewCluster(t, 1) // one node applies the writes: CI-sized
	leader := c.Leader(t)
	ctx := t.Context()
	if st, b := call(t, leader.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"big","private":false}`)); st != 201 {
		t.Fatalf("create channel: %d %s", st, b)
	}
	for b := range batches {
		vs := make([]*v1.PackageVersion, perBatch)
		for i := range vs {
			name := fmt.Sprintf("p%03d", b)
			ver := fmt.Sprintf("1.%d", i)
			vs[i] = &v1.PackageVersion{Channel: "big", Package: name, Platform: "noarch", Filename: name + "-" + ver + "-0.tar.bz2",
				Version: ver, BuildString: "0", Size: 1, Sha256: fmt.Sprintf("%064x", b*perBatch+i),
				RecordJson: []byte(`{"name":"` + name + `","version":"` + ver + `","build":"0","build_number":0,"depends":[],"subdir":"noarch"}`)}
		}
		if _, err := leader.Propose(ctx, &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: vs}}}); err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
	}
	if err := leader.Cluster().Snapshot(); err != nil {
		t.Fatal(err)
	}
	late := c.Add(t)
	c.WaitApplied(t)
	if snaps, err := os.ReadDir(filepath.Join(late.Dir, "raft", "snapshots")); err != nil || len(snaps) == 0 {
		t.Fatalf("the late joiner installed no snapshot: %v %v", snaps, err)
	}
	count := func(n *nodetest.Node) int {
		vs, err := n.Catalog().SubdirVersions(ctx, "big", "noarch")
		if err != nil {
			t.Fatal(err)
		}
		return len(vs)
	}
	if got := count(late); got != batches*perBatch {
		t.Fatalf("the late joiner has %d records, want %d", got, batches*perBatch)
	}
	if st, b := call(t, late.URL(), nodetest.AdminKey, "GET", "/api/channels/big/packages/p042", "", nil); st != 200 {
		t.Fatalf("a package on the late joiner: %d %s", st, b)
	}
}
