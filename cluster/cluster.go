package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/protobuf/proto"
)

// Config configures a node's Raft.
type Config struct {
	// NodeID is this node's stable Raft server id. Required.
	NodeID string
	// Dir holds the Raft log (raft.db) and snapshots. Required.
	Dir string
	// RaftAddr is the TCP address Raft binds; port 0 picks one.
	RaftAddr string
	// Bootstrap makes a node with no Raft state a one-voter cluster.
	Bootstrap bool
	// HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout tune Raft;
	// zero takes raft.DefaultConfig's values.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// SnapshotThreshold is the number of log entries between snapshots.
	SnapshotThreshold uint64
	// Logger receives logs; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("cluster: config: NodeID is required")
	case c.Dir == "":
		return errors.New("cluster: config: Dir is required")
	case c.RaftAddr == "":
		return errors.New("cluster: config: RaftAddr is required")
	}
	return nil
}

// Cluster is a running Raft member.
type Cluster struct {
	cfg       Config
	raft      *raft.Raft
	transport *raft.NetworkTransport
	logs      *raftboltdb.BoltStore
	log       *slog.Logger
	closed    atomic.Bool
	fsm       *fsm // issue 10 (command versions): Halted, and Close unblocks a halted Apply
}

// Open starts Raft on sm. With Bootstrap and no existing state the node
// bootstraps a one-voter cluster and becomes leader shortly after.
func Open(ctx context.Context, cfg Config, sm stateMachine) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	lg := cfg.Logger.With("component", "cluster")
	hl := hclogAdapter(lg)
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: create dir: %w", err)
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
	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("cluster: open raft log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hl)
	if err != nil {
		_ = logs.Close()
		return nil, fmt.Errorf("cluster: open snapshots: %w", err)
	}
	rc.NoSnapshotRestoreOnStart = !restoreOnStart(ctx, sm, snaps, lg) // issue 10: the FSM is persistent, but restore a snapshot it is behind
	addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		_ = logs.Close()
		return nil, fmt.Errorf("cluster: raft address: %w", err)
	}
	trans, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, addrOrNil(addr), 3, 10*time.Second, hl)
	if err != nil {
		_ = logs.Close()
		return nil, fmt.Errorf("cluster: raft transport: %w", err)
	}
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(logs, logs, snaps)
		if err != nil {
			_ = trans.Close()
			_ = logs.Close()
			return nil, fmt.Errorf("cluster: check raft state: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr()}}}
			if err := raft.BootstrapCluster(rc, logs, logs, snaps, trans, conf); err != nil {
				_ = trans.Close()
				_ = logs.Close()
				return nil, fmt.Errorf("cluster: bootstrap: %w", err)
			}
			lg.Info("bootstrapped single-node cluster")
		}
	}
	f := newFSM(sm, lg) // issue 10 (command versions)
	r, err := raft.NewRaft(rc, f, logs, logs, snaps, trans)
	if err != nil {
		_ = trans.Close()
		_ = logs.Close()
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	return &Cluster{cfg: cfg, raft: r, transport: trans, logs: logs, log: lg, fsm: f}, nil
}

func addrOrNil(a *net.TCPAddr) net.Addr {
	if a.Port == 0 {
		return nil // let the transport advertise the bound port
	}
	return a
}

// RaftAddr returns the address Raft listens on (with the real port).
func (c *Cluster) RaftAddr() string { return string(c.transport.LocalAddr()) }

// LastIndex is the index of the last entry in the local Raft log.
func (c *Cluster) LastIndex() uint64 { return c.raft.LastIndex() }

// AppliedIndex is the index of the last entry applied to the FSM.
func (c *Cluster) AppliedIndex() uint64 { return c.raft.AppliedIndex() }

// IsLeader reports whether this node is the Raft leader.
func (c *Cluster) IsLeader() bool { return c.raft.State() == raft.Leader }

// WaitLeader blocks until this cluster has a leader and this node has applied
// everything committed before it became ready, or ctx ends.
func (c *Cluster) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := c.raft.LeaderWithID(); addr != "" {
			if !c.IsLeader() {
				return nil
			}
			return c.raft.Barrier(timeoutOf(ctx)).Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: wait for leader: %w", ctx.Err())
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

// Propose replicates cmd and returns what the state machine's Apply returned.
// The command's time is set here, on the proposer, so that Apply is
// deterministic on every node.
func (c *Cluster) Propose(ctx context.Context, cmd *v1.Command) (any, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if cmd.TimeUnixNano == 0 {
		cmd.TimeUnixNano = time.Now().UnixNano()
	}
	stampVersion(cmd) // issue 10 (command versions)
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("cluster: marshal command: %w", err)
	}
	if h := c.Halted(); h != "" { // issue 10 (command versions): its FSM would never answer
		return nil, fmt.Errorf("%w: %s", ErrHalted, h)
	}
	if !c.IsLeader() {
		return nil, ErrNotLeader
	}
	f := c.raft.Apply(data, timeoutOf(ctx))
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return nil, fmt.Errorf("cluster: apply: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res, _ := f.Response().(applyResult)
	return res.val, res.err
}

// Close shuts Raft down (waiting for in-flight applies), then its transport
// and log store.
func (c *Cluster) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	shut := c.raft.Shutdown()
	c.fsm.halt.shutdown() // issue 10 (command versions): release a halted Apply, which Shutdown waits for
	err := shut.Error()
	if e := c.transport.Close(); err == nil {
		err = e
	}
	if e := c.logs.Close(); err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("cluster: close: %w", err)
	}
	return nil
}

// hclogAdapter routes the Raft library's logs into slog at their levels.
func hclogAdapter(l *slog.Logger) hclog.Logger {
	return NewHCLog(l, "raft", hclog.Info)
}
