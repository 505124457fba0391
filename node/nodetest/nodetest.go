// Package nodetest starts real condamesh nodes for tests: real store, Raft,
// gossip and HTTP on 127.0.0.1 ports below the kernel's ephemeral range
// (ports.go says why), data in t.TempDir(), logs to t.Log, shut down at
// cleanup.
package nodetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/condamesh/condamesh/cluster"
	"github.com/condamesh/condamesh/internal/testcert"
	"github.com/condamesh/condamesh/internal/testlog"
	"github.com/condamesh/condamesh/node"
)

// TestCommitTimeout is the Raft commit timeout of test nodes: raft's
// default, not serve's 5 ms, whose empty appends to every follower are a
// real load for many in-process nodes under the race detector. Benchmarks
// set serve's with ServeCommitTimeout.
const TestCommitTimeout = 50 * time.Millisecond

// ServeCommitTimeout gives a node serve's commit timeout (benchmarks).
func ServeCommitTimeout(c *node.Config) { c.CommitTimeout = 0 }

// AdminKey is the API key of the admin user (server owner) of test nodes.
const AdminKey = "nodetest-admin-key-0123456789"

// Node is a running test node.
type Node struct {
	*node.Node
	Dir     string
	cfg     node.Config
	stop    func()
	crashed bool
	down    bool
}

// Option changes a test node's configuration.
type Option func(*node.Config)

// PlainHTTP serves every request with net/http (the lean HTTP/1.1 loop
// off), for running serving tests in both modes.
func PlainHTTP(c *node.Config) { c.NoLeanHTTP = true }

// WithTLS serves HTTPS and runs Raft and node-to-node calls over mutual
// TLS with f's certificate and CA (clients: Node.HTTPClient).
func WithTLS(f testcert.Files) Option {
	return func(c *node.Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile = f.Cert, f.Key, f.CA }
}

// HTTPClient is a client for the node's URL: with TLS one that trusts the
// node's CA (and presents no client certificate, as conda clients do).
func (n *Node) HTTPClient(t testing.TB) *http.Client {
	t.Helper()
	if n.cfg.TLSCAFile == "" {
		return http.DefaultClient
	}
	pem, err := os.ReadFile(n.cfg.TLSCAFile)
	if err != nil {
		t.Fatalf("nodetest: read CA: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
}

// HTTPModes are the two ways a node serves HTTP, by name, as options for
// Start: tests of what clients see run under both.
var HTTPModes = []struct {
	Name string
	Opts []Option
}{
	{"lean-http", nil},
	{"net-http", []Option{PlainHTTP}},
}

// Start starts one node and waits until it serves, with the admin user
// created.
func Start(t testing.TB, opts ...Option) *Node {
	t.Helper()
	dir := t.TempDir()
	cfg := node.DefaultLocalConfig(dir)
	cfg.CommitTimeout = TestCommitTimeout
	cfg.AdminKey = AdminKey
	cfg.Logger = testlog.New(t, slog.LevelWarn)
	for _, o := range opts {
		o(&cfg)
	}
	return startWith(t, dir, cfg)
}

func startWith(t testing.TB, dir string, cfg node.Config) *Node {
	t.Helper()
	tn := launch(t, dir, cfg)
	tn.waitServing(t)
	return tn
}

// launch starts a node (its listeners bound, Run going) without waiting
// for it to serve.
func launch(t testing.TB, dir string, cfg node.Config) *Node {
	t.Helper()
	ctx := context.Background()
	n, err := newOnStaticPorts(ctx, cfg)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- n.Run(runCtx) }()
	tn := &Node{Node: n, Dir: dir, cfg: cfg}
	tn.stop = sync.OnceFunc(func() {
		tn.down = true
		cancel()
		select {
		case err := <-done:
			if err != nil && !tn.crashed {
				t.Errorf("node run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("node did not stop within 30s")
		}
	})
	t.Cleanup(tn.stop)
	return tn
}

// waitServing waits until a launched node serves, with the admin user
// created (first start of a bootstrapping node).
func (n *Node) waitServing(t testing.TB) {
	t.Helper()
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if _, _, err := n.EnsureAdmin(wctx); err != nil {
		t.Fatalf("node not ready: %v", err)
	}
	if len(n.cfg.Join) > 0 {
		if err := n.WaitReady(wctx); err != nil {
			t.Fatalf("joining node not ready: %v", err)
		}
	}
}

// Partitionable puts each node's links to its peers behind a fault switch
// (cluster.Partition) that Node.Partition and Node.Heal turn. Only for
// the tests that cut nodes off: the others keep memberlist's own
// transport, as in production.
func Partitionable(c *node.Config) { c.Partition = cluster.NewPartition() }

// Partition cuts the node off from its peers (Raft, gossip and
// node-to-node calls, both ways); its HTTP API keeps serving the test.
// The node needs the Partitionable option.
func (n *Node) Partition() { n.cfg.Partition.Cut() }

// Heal ends the partition.
func (n *Node) Heal() { n.cfg.Partition.Heal() }

// Stop stops the node and waits until it has shut down.
func (n *Node) Stop() { n.stop() }

// Restart stops the node and starts a new one on the same data directory
// and configuration. A member of a cluster keeps its addresses (its peers
// know them); a single node gets new ports.
func (n *Node) Restart(t testing.TB) *Node {
	t.Helper()
	n.Stop()
	return startWith(t, n.Dir, n.restartConfig())
}

// restartConfig is n's configuration for a restart on its data directory.
func (n *Node) restartConfig() node.Config {
	cfg := n.cfg
	if n.member() {
		a := n.Addrs()
		cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = a.HTTP, a.Raft, a.Gossip
	}
	return cfg
}

// Crash stops the node the way SIGKILL would as far as its peers can
// tell: listeners and Raft close at once, nothing is drained, flushed or
// announced. The data directory stays for a Restart.
func (n *Node) Crash() {
	n.crashed = true
	n.Node.Kill()
	n.stop()
}

func (n *Node) stopped() bool { return n.down }

func (n *Node) member() bool { return len(n.cfg.Join) > 0 || n.cfg.Fast }

// KeyTransport adds an API key (X-API-Key) to every request it sends
// through Next (Connect clients of tests).
type KeyTransport struct {
	Key  string
	Next http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (k KeyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if k.Key != "" {
		r.Header.Set("X-API-Key", k.Key)
	}
	return k.Next.RoundTrip(r)
}

// DownloadSum sums the counts of every series of a /metrics/channels/...
// answer.
func DownloadSum(body []byte) (int64, error) {
	var m struct {
		Packages map[string]struct {
			Series []struct {
				Count int64 `json:"count"`
			} `json:"series"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return 0, err
	}
	var n int64
	for _, p := range m.Packages {
		for _, pt := range p.Series {
			n += pt.Count
		}
	}
	return n, nil
}
