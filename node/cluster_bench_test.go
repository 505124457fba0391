package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
)

// Cluster benchmarks (docs/BENCHMARKS.md): a 3-node loopback cluster of
// real nodes. Each reports its figures with b.ReportMetric next to the
// anchor measured in the same run (fsync latency; the single node).

// quantiles reports p50 and p99 of ds in milliseconds.
func quantiles(b *testing.B, prefix string, ds []time.Duration) {
	slices.Sort(ds)
	if len(ds) == 0 {
		return
	}
	q := func(p float64) float64 { return float64(ds[int(p*float64(len(ds)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(q(0.5), prefix+"-p50-ms")
	b.ReportMetric(q(0.99), prefix+"-p99-ms")
}

func patchLatencies(b *testing.B, base string, n int) []time.Duration {
	hc := &http.Client{}
	out := make([]time.Duration, 0, n)
	for i := range n {
		req, _ := http.NewRequest(http.MethodPatch, base+"/api/channels/bench", strings.NewReader(fmt.Sprintf(`{"ttl":%d}`, 100+i)))
		req.Header.Set("X-API-Key", nodetest.AdminKey)
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("PATCH on %s: %d", base, resp.StatusCode)
		}
		out = append(out, time.Since(start))
	}
	return out
}

// fsyncLatencies is the floor: one small synced write, as each Raft
// append and FSM apply does.
func fsyncLatencies(b *testing.B, n int) []time.Duration {
	f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := f.Write(make([]byte, 512)); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		out = append(out, time.Since(start))
	}
	return out
}

// BenchmarkClusterPatch: latency of a channel PATCH (one replicated
// write, read back) sent to the leader and to a follower of a 3-node
// cluster, beside a single node's and one fsync's.
func BenchmarkClusterPatch(b *testing.B) {
	const n = 300
	single := nodetest.Start(b, nodetest.ServeCommitTimeout)
	c := nodetest.NewCluster(b, 3, nodetest.ServeCommitTimeout)
	leader := c.Leader(b)
	follower := c.Followers(b)[0]
	for _, u := range []string{single.URL(), leader.URL()} {
		req, _ := http.NewRequest(http.MethodPost, u+"/api/channels", strings.NewReader(`{"name":"bench","private":false}`))
		req.Header.Set("X-API-Key", nodetest.AdminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusCreated {
			b.Fatalf("create: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	c.WaitApplied(b)
	b.ResetTimer()
	for range b.N {
		quantiles(b, "fsync", fsyncLatencies(b, n))
		quantiles(b, "single", patchLatencies(b, single.URL(), n))
		quantiles(b, "leader", patchLatencies(b, leader.URL(), n))
		quantiles(b, "follower", patchLatencies(b, follower.URL(), n))
	}
}

func versionsCmd(ch string, from, n int) *v1.Command {
	vs := make([]*v1.PackageVersion, n)
	for i := range vs {
		name := fmt.Sprintf("p%07d", from+i)
		vs[i] = &v1.PackageVersion{Channel: ch, Package: name, Platform: "linux-64", Filename: name + "-1.0-0.conda", Size: 1000,
			Sha256: fmt.Sprintf("%064x", from+i), RecordJson: []byte(`{"name":"` + name + `","version":"1.0","build":"0","build_number":0,"depends":[]}`)}
	}
	return &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: vs, OwnerId: "bench"}}}
}

func createChannel(b *testing.B, n *nodetest.Node, name string) {
	if _, err := n.Propose(context.Background(), &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: name}}}}); err != nil {
		b.Fatal(err)
	}
}

// proposeBatches proposes batches commands of per records each, all at
// once, as a mirror sync proposes its chunks (mirror.Syncer.propose): Raft
// writes the next ones to its log while the state machine applies one.
func proposeBatches(ctx context.Context, n *node.Node, ch string, from, per, batches int) error {
	var g errgroup.Group
	for i := range batches {
		g.Go(func() error {
			_, err := n.Propose(ctx, versionsCmd(ch, from+i*per, per))
			return err
		})
	}
	return g.Wait()
}

// BenchmarkClusterRecords: package records replicated per second in
// batches of 1,000 (a mirror sync's shape) on a 3-node cluster, until every
// node has applied them, against a single node in the same run. The
// channel's index derivation is held on every node meanwhile, as a mirror
// sync holds it: four nodes' derivations on two cores would measure the
// indexer, not replication.
func BenchmarkClusterRecords(b *testing.B) {
	const batches, per = 50, 1000
	single := nodetest.Start(b, nodetest.ServeCommitTimeout)
	c := nodetest.NewCluster(b, 3, nodetest.ServeCommitTimeout)
	leader := c.Leader(b)
	createChannel(b, single, "recs")
	createChannel(b, leader, "recs")
	for _, n := range append([]*nodetest.Node{single}, c.Nodes...) {
		b.Cleanup(n.HoldIndexes("recs"))
	}
	c.WaitApplied(b)
	rate := func(n *nodetest.Node, from int, all func()) float64 {
		start := time.Now()
		if err := proposeBatches(context.Background(), n.Node, "recs", from, per, batches); err != nil {
			b.Fatal(err)
		}
		all()
		return float64(batches*per) / time.Since(start).Seconds()
	}
	b.ResetTimer()
	for i := range b.N {
		s := rate(single, i*batches*per, func() {})
		l := rate(leader, i*batches*per, func() { c.WaitApplied(b) })
		b.ReportMetric(s, "single-records/s")
		b.ReportMetric(l, "cluster-records/s")
		b.ReportMetric(l/s, "cluster/single")
	}
}

// BenchmarkClusterFailover: from a leader crash (close without leave) to
// the first acknowledged write on a survivor, with the test timers
// (heartbeat and election 200 ms) and with the defaults serve uses.
func BenchmarkClusterFailover(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts []nodetest.Option
	}{
		{"fast-timers", []nodetest.Option{nodetest.ServeCommitTimeout}},
		{"serve-timers", []nodetest.Option{nodetest.ServeCommitTimeout, func(c *node.Config) { c.Fast = false }}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var total time.Duration
			for range b.N {
				c := nodetest.NewCluster(b, 3, tc.opts...)
				leader := c.Leader(b)
				var survivor *nodetest.Node
				for _, n := range c.Nodes {
					if n != leader {
						survivor = n
					}
				}
				start := time.Now()
				leader.Crash()
				for i := 0; ; i++ {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					_, err := survivor.Propose(ctx, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: fmt.Sprintf("f%d", i)}}}})
					cancel()
					if err == nil {
						break
					}
					if time.Since(start) > time.Minute {
						b.Fatalf("no write within a minute: %v", err)
					}
				}
				total += time.Since(start)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "failover-ms")
		})
	}
}

// BenchmarkClusterJoin: an empty node joining a 3-node cluster, until it
// serves (ready) and until it is a voter (Voters=5); and a late joiner
// installing a snapshot of 100,000 records, with the peak Go heap of the
// process sampled meanwhile.
func BenchmarkClusterJoin(b *testing.B) {
	for range b.N {
		c := nodetest.NewCluster(b, 3, nodetest.WithVoters(5), nodetest.ServeCommitTimeout)
		start := time.Now()
		n := c.Add(b, nodetest.WithVoters(5), nodetest.ServeCommitTimeout)
		ready := time.Since(start)
		c.WaitVoters(b, 4)
		voter := time.Since(start)
		_ = n
		b.ReportMetric(float64(ready.Milliseconds()), "join-ready-ms")
		b.ReportMetric(float64(voter.Milliseconds()), "join-voter-ms")

		leader := c.Leader(b)
		createChannel(b, leader, "snap")
		for i := range 100 {
			if _, err := leader.Propose(context.Background(), versionsCmd("snap", i*1000, 1000)); err != nil {
				b.Fatal(err)
			}
		}
		if err := leader.Cluster().Snapshot(); err != nil {
			b.Fatal(err)
		}
		// Let every node's indexer publish the 100k-record index first: the
		// install is measured alone.
		last := fmt.Sprintf("p%07d", 99_999)
		for _, n := range c.Nodes {
			waitIndexed(b, n, "snap", last)
		}
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		var peak atomic.Uint64
		stop := make(chan struct{})
		go func() {
			var m runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
			}
		}()
		start = time.Now()
		late := c.Add(b, nodetest.WithVoters(5), nodetest.ServeCommitTimeout)
		c.WaitApplied(b)
		took := time.Since(start)
		installPeak := peak.Load()
		waitIndexed(b, late, "snap", last)
		serving := time.Since(start)
		close(stop)
		vs, err := late.Catalog().SubdirVersions(context.Background(), "snap", "linux-64")
		if err != nil || len(vs) != 100_000 {
			b.Fatalf("late joiner has %d records: %v", len(vs), err)
		}
		b.ReportMetric(float64(took.Milliseconds()), "snapshot-install-ms")
		b.ReportMetric(float64(serving.Milliseconds()), "install-to-serving-index-ms")
		b.ReportMetric(float64(installPeak-min(installPeak, base.HeapInuse))/(1<<20), "install-heap-growth-MiB")
		b.ReportMetric(float64(peak.Load()-min(peak.Load(), base.HeapInuse))/(1<<20), "to-serving-heap-growth-MiB")
		b.ReportMetric(float64(peak.Load())/(1<<20), "process-heap-peak-MiB")
	}
}

// waitIndexed waits until n serves channel's linux-64 repodata.json with
// the record named name.
func waitIndexed(b *testing.B, n *nodetest.Node, channel, name string) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		resp, err := http.Get(n.URL() + "/get/" + channel + "/linux-64/repodata.json")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"`+name+`-1.0-0.conda"`) {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s does not serve %s in %s", n.ID(), name, channel)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
