package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/protobuf/proto"
)

// Config configures a node's Raft and gossip.
type Config struct {
	// NodeID is this node's stable Raft server id and gossip name. Required.
	NodeID string
	// Dir holds the Raft log (raft.db), snapshots, the cluster id and the
	// known peers. Required.
	Dir string
	// RaftAddr is the TCP address Raft binds; port 0 picks one.
	RaftAddr string
	// RaftAdvertise is the Raft address peers dial. Default: RaftAddr with
	// the bound port, its host replaced by AdvertiseHost when RaftAddr's
	// host is unspecified (0.0.0.0, ::).
	RaftAdvertise string
	// GossipAddr is the memberlist address (TCP and UDP); port 0 picks one.
	// Empty: no gossip (a single node that never joins; tests of Raft).
	GossipAddr string
	// GossipAdvertise is the gossip address peers use. Default as
	// RaftAdvertise.
	GossipAdvertise string
	// AdvertiseHost replaces an unspecified bind host in advertised
	// addresses. Default: the first private IPv4 address of the machine.
	AdvertiseHost string
	// HTTPURL is the advertised base URL of the node's HTTP listener,
	// where peers call PeerService.
	HTTPURL string
	// Site names the node's site (gossiped).
	Site string
	// Version is the build version (gossiped, shown by node list).
	Version string
	// Join lists gossip addresses of members to join (retried until one
	// answers). Known peers from earlier runs are tried too.
	Join []string
	// Bootstrap makes a node that belongs to no cluster (no cluster id, no
	// Raft state) a one-voter cluster. Ignored with Join.
	Bootstrap bool
	// Voters is the number of Raft voters the leader aims for (3 or 5);
	// further nodes are non-voters. Default 3.
	Voters int
	// NonVoter keeps this node a non-voter.
	NonVoter bool
	// PromoteAfter is how long a non-voter must be caught up before the
	// leader promotes it. Default 2 s.
	PromoteAfter time.Duration
	// ReapAfter is how long a server must be dead (gossip) before the
	// leader removes it from Raft. Default 2 min.
	ReapAfter time.Duration
	// MaxLag is how many entries a caught-up node may trail the leader's
	// commit index (promotion, readiness). Default 250.
	MaxLag uint64
	// PeerSecret authenticates node-to-node calls (PeerService). Every
	// node of a cluster has the same one. Required with gossip.
	PeerSecret []byte
	// SecretFingerprint is gossiped so that a node with another API key
	// secret is refused at the merge with a clear message.
	SecretFingerprint string
	// GossipKeys encrypt gossip (AES-GCM; 16, 24 or 32 bytes each): the
	// first encrypts, all decrypt. Rotation, each step a rolling restart of
	// every node: "old,new" (install), "new,old" (use), "new" (remove).
	// Empty: gossip is not encrypted.
	GossipKeys [][]byte
	// PeerClient makes node-to-node calls. Default: an HTTP client that
	// uses TLS's client side for https URLs.
	PeerClient *http.Client
	// TLS, if set, secures Raft (and the default PeerClient): the Raft
	// listener serves TLS with it and peers are dialed with it.
	// Certificates is this node's certificate (its server and its client
	// certificate), RootCAs verifies peers' certificates (nil: the system
	// pool). With ClientCAs set, node-to-node TLS is mutual: the Raft
	// listener requires a client certificate ClientCAs verify, and
	// PeerService refuses a caller whose connection has no verified client
	// certificate. Read once: new certificates need a restart.
	TLS *tls.Config
	// ForwardTimeout bounds one Propose (forwarding and retries) when the
	// caller's context has no deadline. Default 30 s.
	ForwardTimeout time.Duration
	// Fast shortens gossip timers (loopback clusters, tests).
	Fast bool
	// HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout tune Raft;
	// zero takes raft.DefaultConfig's values.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// CommitTimeout is how often the leader sends followers an append
	// (possibly empty) when no new entry triggers one; it bounds how late
	// a follower learns that an entry committed, and so how long a write
	// sent to a follower waits for its own apply. Default 5 ms (raft's 50
	// ms made a follower's write wait about 80 ms at p50).
	CommitTimeout time.Duration
	// SnapshotThreshold is the number of log entries between snapshots.
	SnapshotThreshold uint64
	// Partition, if set, puts every link to the peers behind a switch
	// tests cut and heal (fault injection). Nil in production.
	Partition *Partition
	// Logger receives logs; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	var errs []error
	switch {
	case c.NodeID == "":
		errs = append(errs, errors.New("NodeID is required"))
	case c.Dir == "":
		errs = append(errs, errors.New("Dir is required"))
	case c.RaftAddr == "":
		errs = append(errs, errors.New("RaftAddr is required"))
	}
	if c.Voters != 0 && (c.Voters < 1 || c.Voters > 7) {
		errs = append(errs, fmt.Errorf("voters %d: want 1 to 7 (3 or 5 recommended)", c.Voters))
	}
	if c.GossipAddr != "" && len(c.PeerSecret) < 16 {
		errs = append(errs, errors.New("PeerSecret of at least 16 bytes is required with gossip"))
	}
	for i, k := range c.GossipKeys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			errs = append(errs, fmt.Errorf("gossip key %d: %d bytes, want 16, 24 or 32", i+1, n))
		}
	}
	if c.TLS != nil && len(c.TLS.Certificates) == 0 {
		errs = append(errs, errors.New("TLS without a certificate"))
	}
	if len(c.Site) > 64 {
		errs = append(errs, fmt.Errorf("site %q: at most 64 characters", c.Site))
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			errs = append(errs, fmt.Errorf("join %q: want host:port: %w", j, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Voters == 0 {
		c.Voters = 3
	}
	if c.PromoteAfter == 0 {
		c.PromoteAfter = 2 * time.Second
	}
	if c.ReapAfter == 0 {
		c.ReapAfter = 2 * time.Minute
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = 5 * time.Millisecond
	}
	if c.MaxLag == 0 {
		c.MaxLag = 250
	}
	if c.ForwardTimeout == 0 {
		c.ForwardTimeout = 30 * time.Second
	}
	if c.PeerClient == nil {
		c.PeerClient = &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(c.TLS, nil), ForceAttemptHTTP2: c.TLS != nil,
			MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute, TLSHandshakeTimeout: handshakeTimeout}}
	}
}

// Cluster is a running Raft member with its gossip membership.
type Cluster struct {
	cfg        Config
	raft       *raft.Raft
	transport  *raft.NetworkTransport
	logs       *boltStore
	fsm        *fsm
	ml         *memberlist.Memberlist
	log        *slog.Logger
	raftAdv    string
	peers      *peerClients
	members    members
	events     chan event
	eventsLost atomic.Bool
	refusals   refusals
	// reconnecting is set while a reconnect round runs.
	reconnecting atomic.Bool
	snapMu       sync.Mutex // one Snapshot at a time
	idMu         sync.Mutex
	clusterID    string
	// termReady is the term in which this leader's barrier has applied:
	// reads (ReadIndex) are only served from it.
	termReady  atomic.Uint64
	leadMu     sync.Mutex
	leadCtx    context.Context // ends with this node's leadership
	leadCancel context.CancelFunc
	leadTerm   uint64
	// nudge asks nudgeLoop to tell followers the commit index now.
	nudge  chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
	left   atomic.Bool
}

// Open starts Raft on sm and joins gossip. A node that belongs to no
// cluster bootstraps one when Bootstrap is set and Join is empty; a node
// with Join waits to be added by the leader.
func Open(ctx context.Context, cfg Config, sm stateMachine) (c *Cluster, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	lg := cfg.Logger.With("component", "cluster")
	hl := hclogAdapter(lg)
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: create dir: %w", err)
	}
	c = &Cluster{cfg: cfg, log: lg, events: make(chan event, 1024), nudge: make(chan struct{}, 1), stop: make(chan struct{})}
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
		}
	}()
	if c.clusterID, err = readClusterID(c.clusterIDPath()); err != nil {
		return nil, err
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hl
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	if cfg.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	}
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	rc.CommitTimeout = cfg.CommitTimeout
	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("cluster: open raft log: %w", err)
	}
	c.logs = logs
	closers = append(closers, logs.Close)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hl)
	if err != nil {
		return nil, fmt.Errorf("cluster: open snapshots: %w", err)
	}
	rc.NoSnapshotRestoreOnStart = !restoreOnStart(ctx, sm, snaps, lg) // the FSM is persistent, but restore a snapshot it is behind
	ln, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen raft: %w", err)
	}
	c.raftAdv, err = Advertised(cfg.RaftAdvertise, ln.Addr().String(), cfg.AdvertiseHost)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	sl := &streamLayer{Listener: ln, adv: c.raftAdv}
	if cfg.TLS != nil {
		sl.Listener = &handshakeListener{Listener: tls.NewListener(ln, raftServerTLS(cfg.TLS)), log: lg}
		sl.tls = clientTLS(cfg.TLS, []string{raftALPN})
	}
	var stream raft.StreamLayer = sl
	if cfg.Partition != nil {
		stream = partitionedStream{sl, cfg.Partition}
	}
	c.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 3, Timeout: 10 * time.Second, Logger: hl})
	closers = append(closers, c.transport.Close)
	has, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		return nil, fmt.Errorf("cluster: check raft state: %w", err)
	}
	if has && c.clusterID == "" {
		// A node from before cluster ids: it is its own cluster.
		if err := c.newClusterID(); err != nil {
			return nil, err
		}
	}
	if recovered, err := recoverFromPeersJSON(rc, cfg.Dir, sm, logs, snaps, c.transport, lg); err != nil {
		return nil, err
	} else if recovered {
		has = true
	}
	if !has && c.clusterID == "" && cfg.Bootstrap && len(cfg.Join) == 0 {
		if err := c.newClusterID(); err != nil {
			return nil, err
		}
		conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: raft.ServerAddress(c.raftAdv)}}}
		if err := raft.BootstrapCluster(rc, logs, logs, snaps, c.transport, conf); err != nil {
			return nil, fmt.Errorf("cluster: bootstrap: %w", err)
		}
		lg.Info("bootstrapped single-node cluster", "cluster", c.clusterID)
	}
	c.fsm = newFSM(sm, lg)
	// The newest entries stay decoded in memory: replicating an entry to
	// each follower (and its predecessor's term) otherwise reads it back
	// from the log and decodes it once per follower, 14 % of a leader's
	// CPU in BenchmarkClusterRecordsPerNodeCPU. logCacheEntries bounds it.
	cached, err := raft.NewLogCache(logCacheEntries, logs)
	if err != nil {
		return nil, fmt.Errorf("cluster: raft log cache: %w", err)
	}
	r, err := raft.NewRaft(rc, c.fsm, cached, logs, snaps, c.transport)
	if err != nil {
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	c.raft = r
	closers = append(closers, func() error { return r.Shutdown().Error() })
	peerClient := cfg.PeerClient
	if cfg.Partition != nil {
		pc := *peerClient
		next := pc.Transport
		if next == nil {
			next = http.DefaultTransport
		}
		pc.Transport = partitionedClient{p: cfg.Partition, next: next}
		peerClient = &pc
	}
	c.peers = newPeerClients(peerClient, PeerToken(cfg.PeerSecret))
	if cfg.GossipAddr != "" {
		if err := c.startGossip(); err != nil {
			return nil, err
		}
	}
	c.wg.Add(3)
	go c.reconcileLoop()
	go c.leaderLoop()
	go c.nudgeLoop()
	if c.ml != nil {
		c.wg.Add(1)
		go c.joinLoop()
	}
	return c, nil
}

func (c *Cluster) clusterIDPath() string { return filepath.Join(c.cfg.Dir, "cluster-id") }

func readClusterID(p string) (string, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cluster: read cluster id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (c *Cluster) newClusterID() error {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	if err := writeFileSync(c.clusterIDPath(), []byte(id+"\n")); err != nil {
		return fmt.Errorf("cluster: persist cluster id: %w", err)
	}
	c.idMu.Lock()
	c.clusterID = id
	c.idMu.Unlock()
	return nil
}

// ClusterID names the cluster this node belongs to ("" before it joined).
func (c *Cluster) ClusterID() string {
	c.idMu.Lock()
	defer c.idMu.Unlock()
	return c.clusterID
}

// HasState reports whether dir holds a node's cluster state (a cluster id
// or a Raft log): such a node restarts into its cluster.
func HasState(dir string) bool {
	if id, _ := readClusterID(filepath.Join(dir, "cluster-id")); id != "" {
		return true
	}
	_, err := os.Stat(filepath.Join(dir, "raft.db"))
	return err == nil
}

func writeFileSync(p string, b []byte) error {
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// Advertised returns the address peers should dial: explicit if given,
// else bound with an unspecified host (0.0.0.0, ::) replaced by host, or
// by PrivateIP without one.
func Advertised(explicit, bound, host string) (string, error) {
	if explicit != "" {
		if _, _, err := net.SplitHostPort(explicit); err != nil {
			return "", fmt.Errorf("%w: advertise address %q: %w", ErrConfig, explicit, err)
		}
		return explicit, nil
	}
	h, p, err := net.SplitHostPort(bound)
	if err != nil {
		return "", fmt.Errorf("%w: bound address %q: %w", ErrConfig, bound, err)
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		if host == "" {
			if host, err = PrivateIP(); err != nil {
				return "", err
			}
		}
		h = host
	}
	return net.JoinHostPort(h, p), nil
}

// PrivateIP returns the first private (else any non-loopback) IPv4
// address of the machine.
func PrivateIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("cluster: list addresses: %w", err)
	}
	var fallback string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() {
			continue
		}
		if ipn.IP.IsPrivate() {
			return ipn.IP.String(), nil
		}
		if fallback == "" {
			fallback = ipn.IP.String()
		}
	}
	if fallback == "" {
		return "", fmt.Errorf("%w: binding an unspecified address needs --advertise-addr (no usable interface address)", ErrConfig)
	}
	return fallback, nil
}

// streamLayer is Raft's listener and dialer; Addr reports the advertised
// address. With tls set, connections are TLS both ways (the listener is a
// handshakeListener).
type streamLayer struct {
	net.Listener
	adv string
	tls *tls.Config // client side; nil: plain TCP
}

func (s *streamLayer) Addr() net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s.adv)
	if err != nil {
		return s.Listener.Addr()
	}
	return a
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if s.tls == nil {
		return net.DialTimeout("tcp", string(addr), timeout)
	}
	// The timeout covers the handshake; the peer's name is the host of
	// its advertised Raft address.
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.tls}
	return d.Dial("tcp", string(addr))
}

func (c *Cluster) startGossip() error {
	cfg := c.cfg
	mc := memberlist.DefaultLANConfig()
	if cfg.Fast {
		mc = memberlist.DefaultLocalConfig()
		// The local preset sends a broadcast to 2 nodes only (RetransmitMult
		// 2 × log10(N+1), rounded up), so in a cluster of four a rejoining
		// node's refutation of its "left" state often missed the leader,
		// which then re-added it only at the next push/pull (15 s).
		mc.RetransmitMult = memberlist.DefaultLANConfig().RetransmitMult
	}
	host, port, err := net.SplitHostPort(cfg.GossipAddr)
	if err != nil {
		return fmt.Errorf("%w: gossip address: %w", ErrConfig, err)
	}
	mc.Name = cfg.NodeID
	mc.BindAddr = host
	mc.BindPort, _ = strconv.Atoi(port)
	if cfg.GossipAdvertise != "" {
		h, p, err := net.SplitHostPort(cfg.GossipAdvertise)
		if err != nil {
			return fmt.Errorf("%w: gossip advertise address: %w", ErrConfig, err)
		}
		mc.AdvertiseAddr = h
		mc.AdvertisePort, _ = strconv.Atoi(p)
	} else if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() && cfg.AdvertiseHost != "" {
		mc.AdvertiseAddr = cfg.AdvertiseHost
	}
	if mc.AdvertiseAddr != "" && net.ParseIP(mc.AdvertiseAddr) == nil {
		// memberlist wants an IP: resolve a name (a pod's DNS name).
		ips, err := net.LookupIP(mc.AdvertiseAddr)
		if err != nil || len(ips) == 0 {
			return fmt.Errorf("%w: gossip advertise host %q does not resolve: %v", ErrConfig, mc.AdvertiseAddr, err)
		}
		mc.AdvertiseAddr = ips[0].String()
	}
	mc.Logger = NewStdLogger(c.log.With("component", "gossip"))
	d := gossipDelegate{c: c}
	mc.Delegate, mc.Events, mc.Merge, mc.Alive = d, d, d, d
	if len(cfg.GossipKeys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.GossipKeys, cfg.GossipKeys[0])
		if err != nil {
			return fmt.Errorf("%w: gossip keys: %w", ErrConfig, err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.DeadNodeReclaimTime = 5 * time.Second // a restarted node may come back on new addresses
	if cfg.Partition != nil {
		t, err := newPartitionedTransport(mc, cfg.Partition)
		if err != nil {
			return err
		}
		mc.Transport = t
	}
	if _, err := EncodeMeta(c.localMeta()); err != nil {
		return err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: start gossip: %w", err)
	}
	c.ml = ml
	if mc.BindPort == 0 && mc.AdvertisePort == 0 {
		// Port 0: memberlist advertises the port it bound.
		c.log.Debug("gossip bound", "addr", c.GossipAddr())
	}
	return nil
}

// localMeta is what this node gossips about itself.
func (c *Cluster) localMeta() *v1.NodeMeta {
	return &v1.NodeMeta{
		ClusterId:         c.ClusterID(),
		RaftAddr:          c.raftAdv,
		HttpUrl:           c.cfg.HTTPURL,
		Site:              c.cfg.Site,
		ProtoMin:          ProtoMin,
		ProtoMax:          ProtoMax,
		Version:           c.cfg.Version,
		NonVoter:          c.cfg.NonVoter,
		SecretFingerprint: c.cfg.SecretFingerprint,
	}
}

// logCacheEntries is how many of the newest Raft log entries stay decoded
// in memory for replication: enough for pipelined appends to followers
// that keep up (a lagging one reads the log). An entry is at most
// MaxForward bytes; a mirror sync's batch of 1,000 records is about
// 0.5 MB.
const logCacheEntries = 16

// ProtoMin and ProtoMax are the command versions this build applies.
const (
	ProtoMin = 1
	ProtoMax = catalog.ProtocolVersion
)

// Applies reports whether every voter applies commands of version v, so
// that Propose takes them (a caller can fall back to an older form).
func (c *Cluster) Applies(v uint32) bool {
	return v <= ProtoMin || v <= c.clusterProto()
}

// clusterProto is the newest command version every voter applies (as
// gossiped): newer commands are not proposed until every voter runs a
// build that applies them.
func (c *Cluster) clusterProto() uint32 {
	cf := c.raft.GetConfiguration()
	if cf.Error() != nil {
		return ProtoMin
	}
	return votersProto(cf.Configuration().Servers, c.cfg.NodeID, func(id string) *v1.NodeMeta {
		m, ok := c.members.get(id)
		if !ok {
			return nil
		}
		return m.meta
	})
}

// votersProto is the lowest proto_max among the voters other than self
// (self applies ProtoMax); a voter whose metadata is unknown counts as
// ProtoMin.
func votersProto(servers []raft.Server, self string, meta func(id string) *v1.NodeMeta) uint32 {
	v := uint32(ProtoMax)
	for _, s := range servers {
		if s.Suffrage != raft.Voter || string(s.ID) == self {
			continue
		}
		m := meta(string(s.ID))
		if m == nil || m.ProtoMax == 0 {
			return ProtoMin
		}
		v = min(v, m.ProtoMax)
	}
	return v
}

// GossipAddr is the advertised gossip address ("" without gossip).
func (c *Cluster) GossipAddr() string {
	if c.ml == nil {
		return ""
	}
	n := c.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// RaftAddr returns the advertised Raft address (with the real port).
func (c *Cluster) RaftAddr() string { return c.raftAdv }

// LastIndex is the index of the last entry in the local Raft log.
func (c *Cluster) LastIndex() uint64 { return c.raft.LastIndex() }

// AppliedIndex is the index of the last entry the state machine applied.
func (c *Cluster) AppliedIndex() uint64 { return c.fsm.applied.Load() }

// IsLeader reports whether this node is the Raft leader.
func (c *Cluster) IsLeader() bool { return c.raft.State() == raft.Leader }

// Term is the Raft term this node is in.
func (c *Cluster) Term() uint64 { return c.raft.CurrentTerm() }

// LeaderID names the current leader ("" when none is known).
func (c *Cluster) LeaderID() string {
	_, id := c.raft.LeaderWithID()
	return string(id)
}

// Ready reports whether this node can serve: it knows a leader and has
// applied what the leader committed (within MaxLag), and it applies
// commands (not halted).
func (c *Cluster) Ready() bool {
	if c.closed.Load() || c.fsm.halt.halted() != "" {
		return false
	}
	if c.LeaderID() == "" {
		return false
	}
	if c.IsLeader() {
		return c.termReady.Load() == c.raft.CurrentTerm()
	}
	return c.fsm.applied.Load()+c.cfg.MaxLag >= c.raft.CommitIndex()
}

// WaitLeader blocks until this node is ready (see Ready) or ctx ends.
func (c *Cluster) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if c.Ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: wait for leader: %w", ctx.Err())
		case <-c.stop:
			return ErrClosed
		case <-t.C:
		}
	}
}

func timeoutOf(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 30 * time.Second
}

// Propose replicates cmd through the leader and returns what the state
// machine's Apply returned. On a follower the command is forwarded to the
// leader (PeerService.Forward) and Propose returns once this node has
// applied it too, so a handler reading after a write sees it. The command
// gets the proposer's time (Apply never reads a clock) and a request id:
// a forward retried after an ambiguous failure applies once.
func (c *Cluster) Propose(ctx context.Context, cmd *v1.Command) (any, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if cmd.TimeUnixNano == 0 {
		cmd.TimeUnixNano = time.Now().UnixNano()
	}
	if cmd.RequestId == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		cmd.RequestId = hex.EncodeToString(b[:])
	}
	stampVersion(cmd)
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("cluster: marshal command: %w", err)
	}
	if cmd.Version > ProtoMin && cmd.Version > c.clusterProto() {
		return nil, fmt.Errorf("%w: command version %d is not applied by every voter yet (upgrade them first)", ErrUnsupportedCommand, cmd.Version)
	}
	if h := c.Halted(); h != "" { // its FSM would never answer
		return nil, fmt.Errorf("%w: %s", ErrHalted, h)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.ForwardTimeout)
		defer cancel()
	}
	backoff := 10 * time.Millisecond
	var lastErr error
	for {
		if c.closed.Load() {
			return nil, ErrClosed
		}
		val, err, retry := c.proposeOnce(ctx, data)
		if !retry {
			return val, err
		}
		lastErr = err
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("%w: %w (%w)", ErrNotLeader, lastErr, ctx.Err())
			}
			return nil, fmt.Errorf("%w: %w", ErrNotLeader, ctx.Err())
		case <-c.stop:
			return nil, ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// proposeOnce applies data on the leader (here or by forwarding). retry
// reports a failure after which the same command may be sent again.
func (c *Cluster) proposeOnce(ctx context.Context, data []byte) (val any, err error, retry bool) {
	if c.IsLeader() {
		f := c.raft.Apply(data, timeoutOf(ctx))
		if err := f.Error(); err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrEnqueueTimeout) {
				return nil, err, true
			}
			return nil, fmt.Errorf("cluster: apply: %w", err), false
		}
		res, _ := f.Response().(applyResult)
		return res.val, res.err, false
	}
	leader := c.LeaderID()
	if leader == "" {
		return nil, errors.New("no leader known"), true
	}
	url := c.httpURLOf(leader)
	if url == "" {
		return nil, fmt.Errorf("leader %s has no known HTTP address", leader), true
	}
	resp, err := c.peers.forward(ctx, url, data)
	if err != nil {
		if ctx.Err() != nil || isFinal(err) {
			return nil, err, false
		}
		return nil, err, true
	}
	if err := c.fsm.waitApplied(ctx, resp.GetIndex(), c.stop); err != nil {
		return nil, err, false
	}
	v, e := c.fsm.sm.DecodeResult(resp.GetResult())
	return v, e, false
}

// httpURLOf is a member's advertised HTTP URL.
func (c *Cluster) httpURLOf(id string) string {
	if id == c.cfg.NodeID {
		return c.cfg.HTTPURL
	}
	if m, ok := c.members.get(id); ok && m.meta != nil {
		return m.meta.HttpUrl
	}
	return ""
}

// ReadIndex makes the next local read linearizable: it gets the read
// index from the leader (which confirms its leadership with a quorum) and
// waits until this node has applied it.
func (c *Cluster) ReadIndex(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.ForwardTimeout)
		defer cancel()
	}
	for {
		idx, err := c.readIndexOnce(ctx)
		if err == nil {
			return c.fsm.waitApplied(ctx, idx, c.stop)
		}
		if ctx.Err() != nil || isFinal(err) {
			return fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotLeader, err)
		case <-c.stop:
			return ErrClosed
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *Cluster) readIndexOnce(ctx context.Context) (uint64, error) {
	if c.IsLeader() {
		return c.leaderReadIndex()
	}
	leader := c.LeaderID()
	if leader == "" {
		return 0, errors.New("no leader known")
	}
	url := c.httpURLOf(leader)
	if url == "" {
		return 0, fmt.Errorf("leader %s has no known HTTP address", leader)
	}
	return c.peers.readIndex(ctx, url)
}

// leaderReadIndex is the read index on the leader, once a quorum
// confirmed the leadership and the barrier of this term is applied: the
// last command at or below the commit index. Every entry any node has
// applied is at or below the commit index, so a node that has applied
// that command shows every write acknowledged before the read. It is not
// the commit index itself: the entries at the end of the log are often
// not commands (a new leader's no-op and barrier, membership changes),
// which no state machine applies, so a node waiting to have applied that
// index would wait for the next write.
func (c *Cluster) leaderReadIndex() (uint64, error) {
	if c.termReady.Load() != c.raft.CurrentTerm() {
		return 0, errors.New("leader not ready in this term")
	}
	commit, applied := c.raft.CommitIndex(), c.fsm.applied.Load()
	if err := c.raft.VerifyLeader().Error(); err != nil {
		return 0, err
	}
	return c.lastCommand(commit, applied)
}

// lastCommand returns the index of the last command at or below idx, or
// applied (the state machine's last command) once the search reaches it.
func (c *Cluster) lastCommand(idx, applied uint64) (uint64, error) {
	first, err := c.logs.FirstIndex()
	if err != nil {
		return 0, fmt.Errorf("cluster: read index: first log index: %w", err)
	}
	for ; idx > applied; idx-- {
		if first == 0 || idx < first { // (0: an empty log)
			// Compacted into a snapshot (after non-commands at the log's
			// tail: barriers, a peers.json recovery's configuration): its
			// commands are all applied, the last of them is applied.
			return applied, nil
		}
		var l raft.Log
		if err := c.logs.GetLog(idx, &l); err != nil {
			return 0, fmt.Errorf("cluster: read index: log entry %d: %w", idx, err)
		}
		if l.Type == raft.LogCommand {
			return idx, nil
		}
	}
	return applied, nil
}

// leaderLoop marks a new leader ready for reads once its barrier applied
// (every entry of earlier terms is applied then).
func (c *Cluster) leaderLoop() {
	defer c.wg.Done()
	obs := c.raft.LeaderCh()
	for {
		select {
		case <-c.stop:
			return
		case isLeader := <-obs:
			c.endLeadership()
			if !isLeader {
				continue
			}
			term := c.raft.CurrentTerm()
			// A barrier on a halted FSM never completes, and raft may not
			// answer it at shutdown: wait for it or for Close.
			barrier := make(chan error, 1)
			go func() { barrier <- c.raft.Barrier(30 * time.Second).Error() }()
			var err error
			select {
			case err = <-barrier:
			case <-c.stop:
				return
			}
			if err != nil {
				c.log.Warn("leader barrier", "err", err)
				continue
			}
			c.termReady.Store(term)
			c.leadMu.Lock()
			c.leadCtx, c.leadCancel = context.WithCancel(context.Background())
			c.leadTerm = term
			c.leadMu.Unlock()
			c.log.Info("leading", "term", term)
			c.kick()
		}
	}
}

// nudgeCommit asks for the commit index to reach followers without
// waiting for the next entry or raft's commit timer. A follower that
// forwarded a write answers its client only once it has applied the entry
// itself, and hashicorp/raft tells followers a new commit index only with
// the next AppendEntries: the next log entry, or an idle round every
// CommitTimeout to twice that. Requests coalesce: one barrier in flight,
// at most one more queued.
func (c *Cluster) nudgeCommit() {
	select {
	case c.nudge <- struct{}{}:
	default:
	}
}

// nudgeLoop appends a barrier entry per coalesced nudge: replicating it
// carries the leader's commit index to every follower at once. It is a log
// entry, not a command; the FSM never sees it.
func (c *Cluster) nudgeLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case <-c.nudge:
		}
		if !c.IsLeader() {
			continue
		}
		done := make(chan struct{})
		go func() { _ = c.raft.Barrier(c.cfg.ForwardTimeout).Error(); close(done) }()
		select {
		case <-done:
		case <-c.stop:
			return
		}
	}
}

func (c *Cluster) endLeadership() {
	c.leadMu.Lock()
	defer c.leadMu.Unlock()
	if c.leadCancel != nil {
		c.leadCancel()
		c.leadCtx, c.leadCancel, c.leadTerm = nil, nil, 0
	}
}

// Leadership returns, on the leader, a context that ends when this
// leadership does, and its term (work that must run once in the cluster
// runs under it, fenced by the term); ok is false elsewhere.
func (c *Cluster) Leadership() (ctx context.Context, term uint64, ok bool) {
	c.leadMu.Lock()
	defer c.leadMu.Unlock()
	if c.leadCtx == nil || c.leadCtx.Err() != nil || !c.IsLeader() {
		return nil, 0, false
	}
	return c.leadCtx, c.leadTerm, true
}

// Snapshot takes a Raft snapshot now and compacts the log up to it,
// keeping no trailing entries, so a node that joins later installs the
// snapshot instead of replaying the log (tests, tools).
func (c *Cluster) Snapshot() error {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	rc := c.raft.ReloadableConfig()
	keep := rc.TrailingLogs
	rc.TrailingLogs = 0
	if err := c.raft.ReloadConfig(rc); err != nil {
		return fmt.Errorf("cluster: snapshot: %w", err)
	}
	defer func() {
		rc.TrailingLogs = keep
		_ = c.raft.ReloadConfig(rc)
	}()
	if err := c.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("cluster: snapshot: %w", err)
	}
	return nil
}

// Close leaves nothing behind: it stops the reconciler, gossip (without a
// leave: see Leave), Raft (waiting for in-flight applies), then its
// transport and log store.
func (c *Cluster) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	close(c.stop)
	c.endLeadership()
	var errs []error
	if c.ml != nil {
		if err := c.ml.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	shut := c.raft.Shutdown()
	c.fsm.halt.shutdown() // release a halted Apply, which Shutdown waits for
	if err := shut.Error(); err != nil {
		errs = append(errs, err)
	}
	c.wg.Wait()
	if err := c.transport.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := c.logs.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster: close: %w", err)
	}
	return nil
}

// hclogAdapter routes the Raft library's logs into slog at their levels.
func hclogAdapter(l *slog.Logger) hclog.Logger {
	return NewHCLog(l, "raft", hclog.Info)
}
