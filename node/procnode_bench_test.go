package node_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
)

// Benchmarks with a process per node (docs/BENCHMARKS.md, "a CPU share
// per node"). The in-process cluster benchmarks run three nodes and the
// anchor in one Go process on the machine's two cores: every node's state
// machine applies every record, so a cluster there cannot pass about 2/3
// of a single node whatever replication costs, and four nodes share one
// garbage collector. Here the test binary starts itself once per node
// (TestMain, procNodeEnv), each process in a cgroup with the same CPU
// quota, the single node's included: what a machine per node would give,
// scaled down.

const procNodeEnv = "CONDAMESH_BENCH_NODE" // the node's data directory

// TestMain runs the test binary as a benchmark node when procNodeEnv is
// set, and the tests otherwise.
func TestMain(m *testing.M) {
	if dir := os.Getenv(procNodeEnv); dir != "" {
		if err := runProcNode(dir); err != nil {
			fmt.Fprintln(os.Stderr, "bench node:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// procNodeHello is the line a node process prints once it serves.
type procNodeHello struct {
	HTTP    string `json:"http"`
	Gossip  string `json:"gossip"`
	Control string `json:"control"`
}

// runProcNode starts a node on dir (joining CONDAMESH_BENCH_JOIN if set)
// and a control listener, prints a procNodeHello and runs until stdin
// closes.
func runProcNode(dir string) error {
	cfg := node.DefaultLocalConfig(dir)
	cfg.AdminKey = nodetest.AdminKey
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4})) // quiet: shutdown errors of raft are expected
	if j := os.Getenv("CONDAMESH_BENCH_JOIN"); j != "" {
		cfg.Join = []string{j}
		secret, err := hex.DecodeString(os.Getenv("CONDAMESH_BENCH_SECRET"))
		if err != nil {
			return err
		}
		cfg.API.KeySecret = secret
	}
	if pd := os.Getenv("CONDAMESH_BENCH_PROFILES"); pd != "" {
		// CPU profile of each node process, for finding where a cluster
		// spends what a single node does not.
		f, err := os.Create(filepath.Join(pd, fmt.Sprintf("cpu-%d.prof", os.Getpid())))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := node.New(ctx, cfg)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if _, _, err := n.EnsureAdmin(wctx); err != nil {
		return err
	}
	if err := n.WaitReady(wctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(ln, procNodeControl(n)) }()
	hello, _ := json.Marshal(procNodeHello{HTTP: n.URL(), Gossip: n.Addrs().Gossip, Control: "http://" + ln.Addr().String()})
	fmt.Println(string(hello) + "\n" + hex.EncodeToString(n.KeySecret()))
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop the node
	cancel()
	return <-done
}

// procNodeState is a node process's answer to GET /state.
type procNodeState struct {
	Leader  bool   `json:"leader"`
	Ready   bool   `json:"ready"`
	Applied uint64 `json:"applied"`
	Voters  int    `json:"voters"`
}

// procNodeControl: GET /state; POST /hold?channel= (hold the channel's
// index derivation, as a mirror sync does); POST
// /records?channel=&from=&n=&batches= (propose batches of n records as a
// mirror sync does, answer the seconds they took).
func procNodeControl(n *node.Node) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		st := procNodeState{Leader: n.Cluster().IsLeader(), Ready: n.Cluster().Ready(), Applied: n.Cluster().AppliedIndex()}
		if st.Leader {
			nodes, err := n.Cluster().Nodes(r.Context())
			if err == nil {
				for _, ni := range nodes {
					if s := ni.GetRaftState(); s == "leader" || s == "follower" {
						st.Voters++
					}
				}
			}
		}
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("POST /hold", func(w http.ResponseWriter, r *http.Request) {
		n.HoldIndexes(r.URL.Query().Get("channel"))
	})
	mux.HandleFunc("POST /records", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		from, _ := strconv.Atoi(q.Get("from"))
		per, _ := strconv.Atoi(q.Get("n"))
		batches, _ := strconv.Atoi(q.Get("batches"))
		start := time.Now()
		if err := proposeBatches(r.Context(), n, q.Get("channel"), from, per, batches); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%f", time.Since(start).Seconds())
	})
	return mux
}

// procNode is a node process started by a benchmark.
type procNode struct {
	procNodeHello
	secret string
}

func (p *procNode) state(b *testing.B) procNodeState {
	resp, err := http.Get(p.Control + "/state")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var st procNodeState
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		b.Fatal(err)
	}
	return st
}

func (p *procNode) post(b *testing.B, path string) string {
	resp, err := http.Post(p.Control+path, "", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: %d %s", path, resp.StatusCode, body)
	}
	return string(body)
}

// cpuShare is a cgroup (v1 cpu controller) with a CPU quota, or nil where
// the machine has none writable (the benchmark then skips).
type cpuShare struct{ dir string }

// newCPUShare makes a cgroup allowed cores×100 % of a CPU, in periods of
// 10 ms (short, so a throttled node waits at most a few milliseconds).
func newCPUShare(b *testing.B, name string, cores float64) *cpuShare {
	root := "/sys/fs/cgroup/cpu"
	if _, err := os.Stat(filepath.Join(root, "cpu.cfs_quota_us")); err != nil {
		b.Skipf("no cgroup v1 cpu controller at %s: the per-node CPU share needs one (and root)", root)
	}
	dir := filepath.Join(root, fmt.Sprintf("condamesh-bench-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Skipf("cannot make a cgroup: %v", err)
	}
	b.Cleanup(func() { _ = os.Remove(dir) })
	const period = 10000
	for f, v := range map[string]int{"cpu.cfs_period_us": period, "cpu.cfs_quota_us": int(cores * period)} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(strconv.Itoa(v)), 0o644); err != nil {
			b.Fatalf("cgroup %s: %v", f, err)
		}
	}
	return &cpuShare{dir: dir}
}

// startProcNode starts a node process (joining join's cluster if join is
// not nil) in share and waits until it serves.
func startProcNode(b *testing.B, share *cpuShare, join *procNode) *procNode {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), procNodeEnv+"="+b.TempDir())
	if join != nil {
		cmd.Env = append(cmd.Env, "CONDAMESH_BENCH_JOIN="+join.Gossip, "CONDAMESH_BENCH_SECRET="+join.secret)
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	if share != nil {
		if err := os.WriteFile(filepath.Join(share.dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			b.Fatalf("cgroup: %v", err)
		}
	}
	sc := bufio.NewScanner(stdout)
	var p procNode
	if !sc.Scan() || json.Unmarshal(sc.Bytes(), &p.procNodeHello) != nil || !sc.Scan() {
		b.Fatalf("node process did not start: %q", sc.Text())
	}
	p.secret = strings.TrimSpace(sc.Text())
	return &p
}

// procCluster starts n node processes, each in a cgroup of its own with
// cores of CPU, and returns them with the index of the leader once it
// has min(n, 3) voters.
func procCluster(b *testing.B, name string, n int, cores float64) ([]*procNode, int) {
	var nodes []*procNode
	for i := range n {
		var join *procNode
		if i > 0 {
			join = nodes[0]
		}
		nodes = append(nodes, startProcNode(b, newCPUShare(b, fmt.Sprintf("%s%d", name, i), cores), join))
	}
	leader := -1
	nodetest.Eventually(b, time.Minute, fmt.Sprintf("%d voters", min(n, 3)), func() bool {
		for i, p := range nodes {
			if st := p.state(b); st.Leader && st.Ready && st.Voters == min(n, 3) {
				leader = i
				return true
			}
		}
		return false
	})
	return nodes, leader
}

// waitProcApplied waits until every node has applied what the leader has.
func waitProcApplied(b *testing.B, nodes []*procNode, leader int) {
	want := nodes[leader].state(b).Applied
	nodetest.Eventually(b, time.Minute, "every node applied", func() bool {
		for _, p := range nodes {
			if p.state(b).Applied < want {
				return false
			}
		}
		return true
	})
}

func procCreateChannel(b *testing.B, p *procNode, name string) {
	req, _ := http.NewRequest(http.MethodPost, p.HTTP+"/api/channels", strings.NewReader(`{"name":"`+name+`","private":false}`))
	req.Header.Set("X-API-Key", nodetest.AdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Fatalf("create channel on %s: %d", p.HTTP, resp.StatusCode)
	}
}

// procShare is each node's CPU in the process-per-node benchmarks: two
// thirds of a core, so three nodes fill the machine's two.
const procShare = 2.0 / 3

// BenchmarkClusterRecordsPerNodeCPU is BenchmarkClusterRecords with a
// process and an equal CPU share per node, the single node's included.
// The single node and the cluster take turns, five rounds each, and the
// medians are reported: the VM's CPU varies by tens of percent from one
// second to the next, more than what is measured.
func BenchmarkClusterRecordsPerNodeCPU(b *testing.B) {
	const rounds, batches, per = 5, 20, 1000
	single, _ := procCluster(b, "single", 1, procShare)
	nodes, leader := procCluster(b, "cluster", 3, procShare)
	procCreateChannel(b, single[0], "recs")
	procCreateChannel(b, nodes[leader], "recs")
	for _, p := range append(single, nodes...) {
		p.post(b, "/hold?channel=recs")
	}
	waitProcApplied(b, nodes, leader)
	from := 0
	rate := func(p *procNode, all func()) float64 {
		start := time.Now()
		p.post(b, fmt.Sprintf("/records?channel=recs&from=%d&n=%d&batches=%d", from, per, batches))
		all()
		from += batches * per
		return float64(batches*per) / time.Since(start).Seconds()
	}
	median := func(xs []float64) float64 { slices.Sort(xs); return xs[len(xs)/2] }
	b.ResetTimer()
	for range b.N {
		var s, l, ratio []float64
		for range rounds {
			s = append(s, rate(single[0], func() {}))
			l = append(l, rate(nodes[leader], func() { waitProcApplied(b, nodes, leader) }))
			ratio = append(ratio, l[len(l)-1]/s[len(s)-1])
		}
		b.ReportMetric(median(s), "single-records/s")
		b.ReportMetric(median(l), "cluster-records/s")
		b.ReportMetric(median(ratio), "cluster/single")
	}
}

// BenchmarkClusterPatchPerNodeCPU is BenchmarkClusterPatch with a
// process and an equal CPU share per node.
func BenchmarkClusterPatchPerNodeCPU(b *testing.B) {
	const n = 300
	single, _ := procCluster(b, "single", 1, procShare)
	nodes, leader := procCluster(b, "cluster", 3, procShare)
	follower := nodes[(leader+1)%len(nodes)]
	procCreateChannel(b, single[0], "bench")
	procCreateChannel(b, nodes[leader], "bench")
	waitProcApplied(b, nodes, leader)
	b.ResetTimer()
	for range b.N {
		quantiles(b, "fsync", fsyncLatencies(b, n))
		quantiles(b, "single", patchLatencies(b, single[0].HTTP, n))
		quantiles(b, "leader", patchLatencies(b, nodes[leader].HTTP, n))
		quantiles(b, "follower", patchLatencies(b, follower.HTTP, n))
	}
}
