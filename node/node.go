// Package node is condamesh's composition root: it opens the store, starts
// Raft (cluster), the catalog state machine, the indexer and the HTTP API,
// and shuts them down in order. cmd/condamesh and the tests start nodes
// through the same New, so there is one wiring.
package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/condamesh/condamesh/api"
	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/cluster"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/hotpath"
	"github.com/condamesh/condamesh/indexer"
	"github.com/condamesh/condamesh/internal/secret"
	"github.com/condamesh/condamesh/jobs"
	"github.com/condamesh/condamesh/metrics"
	"github.com/condamesh/condamesh/mirror"
	"github.com/condamesh/condamesh/proxy"
	"github.com/condamesh/condamesh/store"
	"github.com/condamesh/condamesh/upstream"
	"github.com/ipfs/go-cid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
)

// Config configures a node. Every field has a default (DefaultConfig).
type Config struct {
	// DataDir holds the store, the Raft log and the node id.
	DataDir string
	// HTTPAddr serves REST, Connect and /get. Port 0 picks one.
	HTTPAddr string
	// RaftAddr is the Raft transport address. Port 0 picks one.
	RaftAddr string
	// GossipAddr is the memberlist address (TCP and UDP). Port 0 picks one.
	GossipAddr string
	// AdvertiseAddr is the host peers reach this node at, used in every
	// advertised address whose listener binds an unspecified host
	// (0.0.0.0, ::). Default: the machine's first private IPv4 address.
	AdvertiseAddr string
	// AdvertiseHTTP, AdvertiseRaft, AdvertiseGossip override one
	// listener's advertised address (AdvertiseHTTP is a base URL, the
	// others host:port).
	AdvertiseHTTP, AdvertiseRaft, AdvertiseGossip string
	// Join lists gossip addresses (host:port) of members of the cluster
	// to join, retried until one answers. A joining node needs an empty
	// data directory (or Wipe) and never creates an admin user.
	Join []string
	// NoBootstrap keeps a node without cluster state from bootstrapping
	// a single-node cluster: it waits to be joined (`node join` run on a
	// member, or Join).
	NoBootstrap bool
	// Wipe deletes the data directory's metadata (store and Raft state)
	// before a node with Join starts, so a node of another cluster can
	// join this one.
	Wipe bool
	// Site names this node's site.
	Site string
	// Voters is the number of Raft voters the cluster aims for (3 or 5);
	// more nodes are non-voters. Default 3.
	Voters int
	// NonVoter keeps this node a non-voter.
	NonVoter bool
	// GossipKeys encrypt gossip (see cluster.Config.GossipKeys).
	GossipKeys [][]byte
	// TLSCertFile and TLSKeyFile (PEM; the certificate file may carry
	// intermediates after the node's certificate) turn TLS on: the HTTP
	// listener serves HTTPS only (HTTP/1.1 and HTTP/2; the lean HTTP loop
	// is off), the advertised URL is https://, and Raft and node-to-node
	// calls use TLS, verifying peers against TLSCAFile. Both or neither.
	// Read once at start: a new certificate needs a restart.
	TLSCertFile, TLSKeyFile string
	// TLSCAFile (PEM, needs TLSCertFile) verifies peers' certificates
	// (default: the system pool) and makes node-to-node TLS mutual: Raft
	// and PeerService require a client certificate it verifies. Public API
	// clients need none (a certificate they offer must verify).
	TLSCAFile string
	// Version is the build version gossiped to peers.
	Version string
	// AdminKey, if set, is the API key given to the admin user created on
	// first start (for automation); otherwise a random key is generated.
	AdminKey string
	// KeySecretFile holds the server secret that keys the stored hashes of
	// API keys (hex); created with a random secret if missing. Every node
	// of a cluster needs the same secret: copy the file. It is never
	// replicated, so a copy of the metadata (store, Raft log, snapshots)
	// alone cannot be used to test key guesses. Default
	// <DataDir>/api-key-secret.
	KeySecretFile string
	// RaftTimeout is Raft's heartbeat and election timeout (the leader
	// lease is half of it): a follower that hears nothing from the leader
	// for between one and two of these starts an election, which bounds
	// failover. Default 500 ms (failover about 1-2 s); raise it on links
	// with round trips above about 100 ms.
	RaftTimeout time.Duration
	// CommitTimeout is how often the Raft leader sends followers an append
	// when nothing else triggers one: how late a follower learns that an
	// entry committed, so how long a write sent to a follower waits for
	// its own apply (cluster.Config.CommitTimeout). Default 5 ms.
	CommitTimeout time.Duration
	// Fast shortens Raft and gossip timers for loopback clusters and tests.
	Fast bool
	// InlineThreshold overrides the store's inline blob threshold.
	InlineThreshold int64
	// API configures the HTTP API.
	API api.Config
	// Proxy configures proxy channels (its Logger is the node's). Its
	// MaxIndexSize bounds mirror channels' upstream repodata too.
	Proxy proxy.Config
	// Mirror configures mirror synchronisation (downloads, publish
	// batches). The node sets its Logger, Hold and OnProgress; its
	// MaxIndexSize defaults to Proxy.MaxIndexSize.
	Mirror mirror.Config
	// Jobs configures the job runner (its Logger is the node's). Its
	// ErrorLogDir defaults to <DataDir>/task-errors, its Interval to 1 s.
	Jobs jobs.Config
	// BlobGrace is how long an unreferenced blob is kept after it was last
	// written or verified before a sweep may delete it. Default 15 min.
	BlobGrace time.Duration
	// SweepInterval is how often the node deletes unreferenced blobs.
	// Default 1 h.
	SweepInterval time.Duration
	// NoLeanHTTP serves every request with net/http, turning off the lean
	// HTTP/1.1 loop (package hotpath) that otherwise answers conda
	// clients' GET and HEAD requests under /get. Default false (lean on).
	NoLeanHTTP bool
	// NoDownloadCounting turns download counting off (Prometheus counters
	// stay on). For measuring what counting costs.
	NoDownloadCounting bool
	// DownloadFlush is how often download counts are written (batched).
	// Default 10 s: a crash loses at most that much counting.
	DownloadFlush time.Duration
	// ShutdownTimeout bounds graceful shutdown. Default 30 s.
	ShutdownTimeout time.Duration
	// ProposeTimeout bounds one replicated write: waiting for a leader,
	// forwarding to it and the local apply. After it the write answers
	// 503 (no leader reachable). Default 30 s.
	ProposeTimeout time.Duration
	// DebugAddr, if set, serves Go's profiler (/debug/pprof/) there. Keep
	// it on loopback: it has no authentication.
	DebugAddr string
	// MaxConns caps the HTTP connections open at once (every protocol);
	// connections over it are closed at accept. Default 8192.
	MaxConns int
	// MaxConnsPerIP caps the HTTP connections of one client address, so
	// one client cannot hold every slot. Default 1024; -1: no such cap.
	MaxConnsPerIP int
	// FetchNetworks confines the server-side fetches made for callers who
	// are not server owners (mirror registry checks, their
	// synchronize_metrics jobs). Nil: upstream.DefaultRestricted().
	FetchNetworks *upstream.Networks
	// Redirects is the redirect policy of every upstream fetch. Default
	// upstream.RedirectSameRules.
	Redirects upstream.RedirectPolicy
	// Partition, if set, is a fault switch tests use to cut this node off
	// from its peers (cluster.Partition). Nil in production.
	Partition *cluster.Partition
	// Logger receives all logs. Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig is the embedded default: one node on loopback, data in
// ./condamesh-data, HTTP on 127.0.0.1:8000.
func DefaultConfig() Config {
	return Config{
		DataDir:         "condamesh-data",
		HTTPAddr:        "127.0.0.1:8000",
		RaftAddr:        "127.0.0.1:8300",
		GossipAddr:      "127.0.0.1:8301",
		ShutdownTimeout: 30 * time.Second,
		RaftTimeout:     500 * time.Millisecond,
		MaxConns:        8192,
		MaxConnsPerIP:   1024,
	}
}

// DefaultLocalConfig is DefaultConfig on ephemeral ports with fast timers,
// for tests and local clusters.
func DefaultLocalConfig(dataDir string) Config {
	c := DefaultConfig()
	c.DataDir = dataDir
	c.HTTPAddr, c.RaftAddr, c.GossipAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	c.Fast = true
	c.ShutdownTimeout = 10 * time.Second
	return c
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	for name, addr := range map[string]string{"http": c.HTTPAddr, "raft": c.RaftAddr, "gossip": c.GossipAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s address %q: %w", name, addr, err))
		}
	}
	if _, _, err := net.SplitHostPort(c.DebugAddr); c.DebugAddr != "" && err != nil {
		errs = append(errs, fmt.Errorf("debug address %q: %w", c.DebugAddr, err))
	}
	if err := c.Redirects.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxConnsPerIP < -1 {
		errs = append(errs, fmt.Errorf("max conns per IP %d: must be positive, or -1 for no cap", c.MaxConnsPerIP))
	}
	if c.ProposeTimeout < 0 {
		errs = append(errs, fmt.Errorf("propose timeout %v: must be positive (0: the default)", c.ProposeTimeout))
	}
	if c.RaftTimeout != 0 && (c.RaftTimeout < 50*time.Millisecond || c.RaftTimeout > time.Minute) {
		errs = append(errs, fmt.Errorf("raft timeout %v: want 50ms to 1m", c.RaftTimeout))
	}
	if c.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("max conns %d: must be positive (0: the default)", c.MaxConns))
	}
	if c.API.BodyMinRate < 0 && c.API.BodyMinRate != -1 {
		errs = append(errs, fmt.Errorf("body min rate %d: must be positive, or -1 for no bound", c.API.BodyMinRate))
	}
	if err := c.Proxy.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Jobs.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.AdminKey != "" && (len(c.AdminKey) < 16 || strings.ContainsAny(c.AdminKey, "/ \t\n")) {
		errs = append(errs, errors.New("admin key must be at least 16 characters without '/' or spaces"))
	}
	if err := c.API.Validate(); err != nil {
		errs = append(errs, err)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("tls cert file and tls key file go together"))
	}
	if c.TLSCAFile != "" && c.TLSCertFile == "" {
		errs = append(errs, errors.New("tls ca file needs a tls cert file and key file (mutual TLS presents this node's certificate)"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node: config: %w", err)
	}
	return nil
}

// Node is one running condamesh server.
type Node struct {
	cfg       Config
	log       *slog.Logger
	st        *store.Store
	cat       *catalog.Catalog
	cl        *cluster.Cluster
	idx       *indexer.Indexer
	jobs      *jobs.Runner
	up        *upstream.Client
	proxy     *proxy.Proxy
	mirror    *mirror.Syncer
	downloads *metrics.Downloads
	prom      *metrics.Prom
	api       *api.Server
	httpLn    net.Listener
	scheme    string          // of the HTTP listener: http, or https with TLS
	srv       *http.Server    // every connection outside the hot path
	front     httpServer      // serves httpLn: a hotpath.Server over srv, or srv itself
	lean      *hotpath.Server // front when the lean loop is on, else nil
	debugLn   net.Listener
	debug     *http.Server
	nodeID    string
	closeMu   sync.Once
	runDone   chan struct{}
	stopRun   chan struct{} // closed to stop Run (after a leave)
	stopOnce  sync.Once
}

// New opens a node: store, Raft, gossip and the HTTP listener are bound
// (Addrs reports real ports) but nothing is served until Run.
func New(ctx context.Context, cfg Config) (n *Node, err error) {
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.BlobGrace == 0 {
		cfg.BlobGrace = blobGrace
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsBase, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	if tlsBase != nil {
		cfg.NoLeanHTTP = true // the lean loop speaks plain HTTP/1.1 only
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("node: create data dir: %w", err)
	}
	n = &Node{cfg: cfg, log: cfg.Logger, scheme: "http", runDone: make(chan struct{}), stopRun: make(chan struct{})}
	if tlsBase != nil {
		n.scheme = "https"
	}
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
		}
	}()
	if err := prepareJoin(cfg); err != nil {
		return nil, err
	}
	if n.nodeID, err = loadNodeID(cfg.DataDir); err != nil {
		return nil, err
	}
	n.log = cfg.Logger.With("node", n.nodeID)
	n.st, err = store.Open(ctx, store.Config{Dir: filepath.Join(cfg.DataDir, "store"), InlineThreshold: cfg.InlineThreshold, Logger: n.log})
	if err != nil {
		return nil, err
	}
	closers = append(closers, n.st.Close)
	if cfg.KeySecretFile == "" {
		cfg.KeySecretFile = filepath.Join(cfg.DataDir, "api-key-secret")
	}
	if len(cfg.API.KeySecret) == 0 { // read once the store's lock is held
		if cfg.API.KeySecret, err = secret.LoadOrCreateKeySecret(cfg.KeySecretFile); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	n.cfg = cfg
	var idx *indexer.Indexer
	n.cat = catalog.New(n.st, func(ch string) { idx.Notify(ch) })
	idx = indexer.New(n.cat, n.st, n.log)
	n.idx = idx
	n.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("node: listen http: %w", err)
	}
	closers = append(closers, n.httpLn.Close)
	httpURL, err := advertisedURL(cfg, n.httpLn.Addr().String())
	if err != nil {
		return nil, err
	}
	ccfg := cluster.Config{
		NodeID: n.nodeID, Dir: filepath.Join(cfg.DataDir, "raft"),
		RaftAddr: cfg.RaftAddr, RaftAdvertise: cfg.AdvertiseRaft,
		GossipAddr: cfg.GossipAddr, GossipAdvertise: cfg.AdvertiseGossip,
		AdvertiseHost: cfg.AdvertiseAddr, HTTPURL: httpURL,
		Site: cfg.Site, Version: cfg.Version, Join: cfg.Join,
		Bootstrap: !cfg.NoBootstrap, Voters: cfg.Voters, NonVoter: cfg.NonVoter,
		PeerSecret: cfg.API.KeySecret, SecretFingerprint: cluster.Fingerprint(cfg.API.KeySecret),
		GossipKeys: cfg.GossipKeys, TLS: tlsBase, Fast: cfg.Fast, ForwardTimeout: cfg.ProposeTimeout, Partition: cfg.Partition, Logger: n.log,
	}
	rt := cfg.RaftTimeout
	if rt == 0 {
		rt = DefaultConfig().RaftTimeout
	}
	if cfg.Fast {
		rt = 400 * time.Millisecond
		ccfg.PromoteAfter, ccfg.ReapAfter = 500*time.Millisecond, 3*time.Second
	}
	ccfg.HeartbeatTimeout, ccfg.ElectionTimeout, ccfg.LeaderLeaseTimeout = rt, rt, rt/2
	ccfg.CommitTimeout = cfg.CommitTimeout
	n.cl, err = cluster.Open(ctx, ccfg, &machine{cat: n.cat, st: n.st, idx: idx})
	if err != nil {
		return nil, err
	}
	closers = append(closers, n.cl.Close)
	jcfg := cfg.Jobs
	jcfg.Logger = n.log
	if jcfg.Interval == 0 {
		jcfg.Interval = time.Second
	}
	if jcfg.ErrorLogDir == "" {
		jcfg.ErrorLogDir = filepath.Join(cfg.DataDir, "task-errors")
	}
	n.jobs = jobs.New(jcfg, n.cat, n.cl, n.cl.Leadership)
	n.registerActions()
	n.prom = metrics.NewProm(n.storeSize)
	n.prom.WatchRaft(n.cl.LastIndex, n.cl.AppliedIndex)
	if cfg.API.HTTPClient == nil {
		cfg.API.HTTPClient = upstream.NewHTTPClient(15*time.Second, nil, cfg.Redirects)
	}
	if cfg.API.RestrictedHTTPClient == nil {
		nets := upstream.DefaultRestricted()
		if cfg.FetchNetworks != nil {
			nets = *cfg.FetchNetworks
		}
		cfg.API.RestrictedHTTPClient = upstream.NewHTTPClient(15*time.Second, &nets, cfg.Redirects)
	}
	n.up = upstream.New(upstream.Config{Logger: n.log, Restricted: cfg.FetchNetworks, Redirects: cfg.Redirects, Observe: func(o string) { n.prom.Upstream.WithLabelValues(o).Inc() }})
	pcfg := cfg.Proxy
	pcfg.Logger = n.log
	n.proxy = proxy.New(pcfg, n.cat, n.st, n.cl, n.up)
	mcfg := cfg.Mirror
	mcfg.Logger, mcfg.Hold = n.log, n.idx.Hold
	if mcfg.MaxIndexSize == 0 {
		mcfg.MaxIndexSize = cfg.Proxy.MaxIndexSize
	}
	mcfg.OnProgress = func(ch string, p jobs.Progress) {
		n.prom.SyncFiles.WithLabelValues(ch, "done").Set(float64(p.FilesDone))
		n.prom.SyncFiles.WithLabelValues(ch, "total").Set(float64(p.FilesTotal))
		n.prom.SyncFiles.WithLabelValues(ch, "errors").Set(float64(p.Errors))
	}
	n.mirror = mirror.New(mcfg, n.cat, n.st, n.cl, n.up)
	n.jobs.Register("synchronize_repodata", n.mirror.Action(mirror.FromRepodata))
	n.jobs.Register("synchronize", n.mirror.Action(mirror.FromArchives))
	n.jobs.Register("synchronize_metrics", metrics.NewMirrorPuller(n.cat, n.cl, n.up, cfg.API.Now, n.log).Action())
	n.downloads = metrics.NewDownloads(metrics.DownloadsConfig{FlushEvery: cfg.DownloadFlush, Logger: n.log, NodeID: n.nodeID, LastSeq: n.lastDownloadSeq}, n.cl)
	var counter api.Downloads = n.downloads
	if cfg.NoDownloadCounting {
		counter = nil
	}
	peerPath, peerHandler := n.cl.PeerHandler()
	n.api = api.New(cfg.API, api.Deps{Catalog: n.cat, Proposer: n.cl, Blobs: n.st, Indexes: idx, Jobs: n.jobs, Proxies: n.proxy, Downloads: counter, Prom: n.prom, Ready: n.cl.Ready,
		Cluster: nodeCluster{n}, Mounts: map[string]http.Handler{peerPath: peerHandler}})
	maxConns := cfg.MaxConns
	if maxConns == 0 {
		maxConns = DefaultConfig().MaxConns
	}
	perIP := cfg.MaxConnsPerIP
	if perIP == 0 {
		perIP = DefaultConfig().MaxConnsPerIP
	}
	n.httpLn = newCapListener(n.httpLn, maxConns, perIP, n.log)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	var srvTLS *tls.Config
	if tlsBase != nil {
		// HTTPS only; ReadHeaderTimeout bounds the handshake too.
		protos.SetUnencryptedHTTP2(false)
		protos.SetHTTP2(true)
		srvTLS = publicTLS(tlsBase)
		n.httpLn = tls.NewListener(n.httpLn, srvTLS)
	}
	n.srv = &http.Server{
		Handler:           n.api,
		Protocols:         &protos,
		TLSConfig:         srvTLS,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	if cfg.DebugAddr != "" {
		if n.debugLn, err = net.Listen("tcp", cfg.DebugAddr); err != nil {
			return nil, fmt.Errorf("node: listen debug: %w", err)
		}
		closers = append(closers, n.debugLn.Close)
		dm := http.NewServeMux()
		dm.HandleFunc("/debug/pprof/", pprof.Index)
		dm.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		dm.HandleFunc("/debug/pprof/profile", pprof.Profile)
		dm.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		dm.HandleFunc("/debug/pprof/trace", pprof.Trace)
		n.debug = &http.Server{Handler: dm, ReadHeaderTimeout: 10 * time.Second}
	}
	n.front = n.srv
	if !cfg.NoLeanHTTP {
		n.lean = hotpath.New(hotpath.Config{
			Handler:           n.api,
			Fallback:          n.srv,
			Eligible:          api.HotPath,
			ReadHeaderTimeout: n.srv.ReadHeaderTimeout,
			IdleTimeout:       n.srv.IdleTimeout,
			Logger:            n.log,
		})
		n.front = n.lean
	}
	return n, nil
}

// LeanAnswered reports whether the node's lean HTTP loop is on and how
// many requests it has answered itself (the rest went to net/http).
func (n *Node) LeanAnswered() (on bool, answered uint64) {
	if n.lean == nil {
		return false, 0
	}
	return true, n.lean.Answered()
}

// httpServer is what the node needs of its HTTP server.
type httpServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// loadNodeID returns the node's stable id, creating it on first start.
func loadNodeID(dir string) (string, error) {
	p := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(p); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("node: read node id: %w", err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := "node-" + hex.EncodeToString(b[:])
	if err := os.WriteFile(p, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("node: write node id: %w", err)
	}
	return id, nil
}

// Addrs are the addresses a node actually listens on.
type Addrs struct {
	HTTP, Raft, Gossip string
}

// Addrs reports the bound addresses (with the ports picked for port 0).
func (n *Node) Addrs() Addrs {
	return Addrs{HTTP: n.httpLn.Addr().String(), Raft: n.cl.RaftAddr(), Gossip: n.cl.GossipAddr()}
}

// URL is the node's base HTTP URL.
func (n *Node) URL() string { return n.scheme + "://" + n.httpLn.Addr().String() }

// ID is the node's stable id.
func (n *Node) ID() string { return n.nodeID }

// Handler is the node's HTTP handler (for in-process tests and benchmarks).
func (n *Node) Handler() http.Handler { return n.api }

// Store exposes the node's store to tests and tools in this module.
func (n *Node) Store() *store.Store { return n.st }

// Catalog exposes the node's catalog to tests and tools in this module.
func (n *Node) Catalog() *catalog.Catalog { return n.cat }

// Propose replicates a catalog command through Raft (tests and tools in
// this module: the break-glass commands, fixtures of older formats).
func (n *Node) Propose(ctx context.Context, cmd *v1.Command) (any, error) {
	return n.cl.Propose(ctx, cmd)
}

// WaitReady waits until Raft has a leader and local state is caught up.
func (n *Node) WaitReady(ctx context.Context) error { return n.cl.WaitLeader(ctx) }

// KeySecret is the node's API key secret (tests: every node of a test
// cluster gets the first node's).
func (n *Node) KeySecret() []byte { return n.cfg.API.KeySecret }

// Kill stops serving and leaves Raft and gossip at once, without draining
// or announcing anything: what peers see of a SIGKILL (tests). Run then
// returns after stopping the rest.
func (n *Node) Kill() {
	_ = n.httpLn.Close()
	_ = n.cl.Close()
}

// HoldIndexes defers the index derivation of channel on this node until
// release, as a mirror sync does during its batches (benchmarks of
// replication alone).
func (n *Node) HoldIndexes(channel string) (release func()) { return n.idx.Hold(channel) }

// Cluster exposes the node's cluster membership to tests in this module.
func (n *Node) Cluster() *cluster.Cluster { return n.cl }

// EnsureAdmin creates the admin user (server role owner) on first start and
// returns its new API key; on later starts it returns "" and created=false.
func (n *Node) EnsureAdmin(ctx context.Context) (key string, created bool, err error) {
	if len(n.cfg.Join) > 0 || n.cfg.NoBootstrap {
		return "", false, nil // a joining node never creates users
	}
	if err := n.WaitReady(ctx); err != nil {
		return "", false, err
	}
	if _, err := n.cat.UserByName(ctx, "admin"); err == nil {
		return "", false, nil
	}
	u := &v1.User{Id: api.NewUUID(), Username: "admin", Name: "Administrator", Role: "owner"}
	if _, err := n.cl.Propose(ctx, &v1.Command{Op: &v1.Command_PutUser{PutUser: &v1.PutUserOp{User: u}}}); err != nil {
		return "", false, fmt.Errorf("node: create admin: %w", err)
	}
	key, err = n.api.PresetKey(ctx, u, "admin key (created on first start)", n.cfg.AdminKey)
	if err != nil {
		return "", false, fmt.Errorf("node: create admin key: %w", err)
	}
	return key, true, nil
}

// Run serves until ctx ends, then shuts down in order (see Close).
func (n *Node) Run(ctx context.Context) error {
	defer close(n.runDone)
	g, gctx := errgroup.WithContext(ctx)
	// The background workers get their own context: they must stop after
	// HTTP has drained and before Raft and the store close.
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	var bg sync.WaitGroup
	bgErr := make(chan error, 5)
	for _, run := range []func(context.Context) error{n.idx.Run, n.jobs.Run, n.sweepLoop, n.downloads.Run, n.migrateKeys} {
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := run(bgCtx); err != nil {
				bgErr <- err
			}
		}()
	}
	if n.debug != nil {
		go func() { _ = n.debug.Serve(n.debugLn) }()
		defer n.debug.Close()
	}
	g.Go(func() error {
		if err := n.front.Serve(n.httpLn); err != nil && !errors.Is(err, hotpath.ErrServerClosed) && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("node: serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		select {
		case <-gctx.Done():
		case <-n.stopRun:
			n.log.Info("stopping after leaving the cluster")
		case err := <-bgErr:
			n.log.Error("background worker failed, shutting down", "err", err)
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.ShutdownTimeout)
		defer cancel()
		return n.shutdown(sctx, func() { stopBG(); bg.Wait() })
	})
	n.log.Info("node serving", "http", n.URL(), "raft", n.cl.RaftAddr(), "lean_http", !n.cfg.NoLeanHTTP)
	return g.Wait()
}

// shutdown stops, in order: the HTTP server (draining requests, so no
// accepted write is cut), the background workers (indexer, jobs: a job cut
// short is rescheduled on the next start), then flushes the pending
// download counts, then the proxy's background derivations, then gossip
// and Raft (finishing in-flight applies;
// without a leave: a restarting node stays a member, see Leave), then the
// store.
func (n *Node) shutdown(ctx context.Context, stopWorkers func()) error {
	var errs []error
	if err := n.front.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	stopWorkers()
	// Count what was downloaded until the HTTP server stopped. Without a
	// reachable leader (the rest of the cluster is down) the counts are
	// lost after a bounded wait: a stopping node must not hang on them.
	fctx, cancel := context.WithTimeout(ctx, flushAtShutdown)
	if err := n.downloads.Flush(fctx); err != nil {
		n.log.Warn("download counts not written at shutdown (no leader reachable); they are lost", "err", err)
	}
	cancel()
	n.closeRest(ctx, &errs)
	return errors.Join(errs...)
}

func (n *Node) closeRest(ctx context.Context, errs *[]error) {
	n.closeMu.Do(func() {
		n.proxy.Close() // derivations write to the store
		if err := n.cl.Close(); err != nil {
			*errs = append(*errs, err)
		}
		if err := n.st.Close(); err != nil {
			*errs = append(*errs, err)
		}
		n.log.Info("node stopped")
	})
}

// Close releases a node that was never Run (or whose Run has returned).
func (n *Node) Close(ctx context.Context) error {
	var errs []error
	_ = n.httpLn.Close()
	n.closeRest(ctx, &errs)
	return errors.Join(errs...)
}

// machine joins the catalog and the store into the cluster's state machine.
type machine struct {
	cat *catalog.Catalog
	st  *store.Store
	idx *indexer.Indexer
}

func (m *machine) Apply(ctx context.Context, index uint64, cmd *v1.Command) (any, error) {
	return m.cat.Apply(ctx, index, cmd)
}

func (m *machine) Snapshot(ctx context.Context) (*store.Snapshot, error) { return m.st.Snapshot(ctx) }

func (m *machine) AppliedIndex(ctx context.Context) (uint64, error) { return m.st.AppliedIndex(ctx) }

func (m *machine) EncodeResult(val any, err error) *v1.ApplyResult {
	return catalog.EncodeResult(val, err)
}

func (m *machine) DecodeResult(r *v1.ApplyResult) (any, error) { return catalog.DecodeResult(r) }

func (m *machine) Restore(ctx context.Context, r io.Reader) error {
	err := m.st.Restore(ctx, r)
	m.cat.Invalidate()
	if err != nil {
		return err
	}
	return m.idx.NotifyAll(ctx)
}

// registerActions installs the job handlers. A job without a channel (POST
// /api/jobs) runs its action on every channel.
func (n *Node) registerActions() {
	everywhere := func(a jobs.Action) jobs.Action {
		return func(ctx context.Context, j *v1.Job) error {
			if j.Channel != "" {
				return a(ctx, j)
			}
			chans, err := n.cat.Channels(ctx)
			if err != nil {
				return err
			}
			var errs []error
			for _, ch := range chans {
				each := proto.Clone(j).(*v1.Job)
				each.Channel = ch.Name
				errs = append(errs, a(ctx, each))
			}
			return errors.Join(errs...)
		}
	}
	n.jobs.Register("generate_indexes", everywhere(jobs.GenerateIndexes(n.idx)))
	n.jobs.Register("validate_packages", everywhere(jobs.ValidatePackages(n.cat, n.st, n.cl, n.idx)))
	n.jobs.Register("reindex", everywhere(jobs.Reindex(n.cat, n.st, n.cl, n.idx)))
	// Jobs with an items_spec: these two act on each selected file; the
	// others run their channel action on each channel holding one.
	n.jobs.RegisterItems("validate_packages", jobs.ValidatePackage(n.st, n.cl))
	n.jobs.RegisterItems("reindex", jobs.ReindexPackage(n.st, n.cl))
	for manifest, dry := range map[string]bool{"cleanup": false, "cleanup_dry_run": true} {
		cleanup := jobs.Cleanup(n.cat, n.cl, dry, n.jobs)
		n.jobs.Register(manifest, func(ctx context.Context, j *v1.Job) error {
			if err := cleanup(ctx, j); err != nil {
				return err
			}
			_, err := n.sweep(ctx, dry)
			return err
		})
	}
}

// flushAtShutdown bounds the last write of download counts at shutdown.
const flushAtShutdown = 5 * time.Second

// blobGrace protects freshly written blobs from a sweep until the command
// referencing them has had ample time to commit.
const blobGrace = 15 * time.Minute

// sweep deletes (dry: counts) this node's blobs that no package file and no
// published index file references, and that no Put wrote or re-verified
// within BlobGrace.
func (n *Node) sweep(ctx context.Context, dry bool) (jobs.SweepResult, error) {
	return n.Sweep(ctx, time.Now(), dry)
}

// Sweep is the blob sweep as if run at now: it deletes (dry: lists) the
// blobs nothing references that were last written or verified more than
// BlobGrace before now. The node runs it every SweepInterval and in the
// cleanup actions; tests call it with a later now to look past the grace
// period.
func (n *Node) Sweep(ctx context.Context, now time.Time, dry bool) (jobs.SweepResult, error) {
	versions := func(ctx context.Context, keep func(cid.Cid)) error {
		return n.cat.EachVersionSHA256(ctx, func(h string) error {
			if c, err := store.CIDFromHex(h); err == nil {
				keep(c)
			}
			return nil
		})
	}
	published := func(ctx context.Context, keep func(cid.Cid)) error {
		return n.idx.EachPublished(ctx, func(c cid.Cid) error { keep(c); return nil })
	}
	proxied := func(ctx context.Context, keep func(cid.Cid)) error {
		return n.cat.EachProxyCID(ctx, func(s string) error {
			if c, err := cid.Decode(s); err == nil {
				keep(c)
			}
			return nil
		})
	}
	derived := func(ctx context.Context, keep func(cid.Cid)) error {
		return n.proxy.EachDerived(ctx, func(c cid.Cid) error { keep(c); return nil })
	}
	res, err := jobs.Sweep(ctx, n.st, n.cfg.BlobGrace, now, dry, versions, published, proxied, derived)
	if err == nil && res.Blobs > 0 {
		n.log.Info("blob sweep", "blobs", res.Blobs, "bytes", res.Bytes, "dry_run", dry)
	}
	return res, err
}

// sweepLoop sweeps unreferenced blobs every SweepInterval.
func (n *Node) sweepLoop(ctx context.Context) error {
	t := time.NewTicker(n.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := n.sweep(ctx, false); err != nil && ctx.Err() == nil {
				n.log.Error("blob sweep", "err", err)
			}
		}
	}
}

// migrateKeys moves API key records stored under their legacy hash to the
// keyed hash (api.Server.MigrateKeyHashes) once this node leads. Failure
// is logged, not fatal: legacy records keep authenticating until the next
// start migrates them.
func (n *Node) migrateKeys(ctx context.Context) error {
	if err := n.cl.WaitLeader(ctx); err != nil || !n.cl.IsLeader() {
		return nil
	}
	moved, err := n.api.MigrateKeyHashes(ctx)
	if err != nil && ctx.Err() == nil {
		n.log.Warn("migrate api key hashes", "err", err, "moved", moved)
	} else if moved > 0 {
		n.log.Info("api key hashes migrated to the keyed scheme", "keys", moved)
	}
	return nil
}

// lastDownloadSeq is the last download batch number the cluster applied
// for this node, read after catching up with the leader (a node restarted
// behind its own last batch would otherwise reuse numbers, and the FSM
// would drop those batches).
func (n *Node) lastDownloadSeq(ctx context.Context, nodeID string) (uint64, error) {
	if err := n.cl.ReadIndex(ctx); err != nil {
		return 0, err
	}
	return n.cat.DownloadSeq(ctx, nodeID)
}

// storeSize counts the store's blobs and their bytes (for metrics).
func (n *Node) storeSize(ctx context.Context) (blobs, bytes int64, err error) {
	err = n.st.List(ctx, func(b store.BlobInfo) error {
		blobs++
		bytes += b.Size
		return nil
	})
	return blobs, bytes, err
}
