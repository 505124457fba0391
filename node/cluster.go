package node

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/condamesh/condamesh/cluster"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

// ErrNotEmpty refuses to join a cluster with a data directory that holds
// another cluster's data.
var ErrNotEmpty = errors.New("node: data directory holds data")

// prepareJoin checks (or with Wipe, makes) a data directory fit to join a
// cluster: a node restarting into its own cluster keeps its state; one that
// never joined must not bring a store of its own.
func prepareJoin(cfg Config) error {
	if len(cfg.Join) == 0 && !cfg.NoBootstrap {
		return nil
	}
	raftDir := filepath.Join(cfg.DataDir, "raft")
	storeDir := filepath.Join(cfg.DataDir, "store")
	if cfg.Wipe {
		for _, d := range []string{raftDir, storeDir} {
			if err := os.RemoveAll(d); err != nil {
				return fmt.Errorf("node: wipe %s: %w", d, err)
			}
		}
		return nil
	}
	if cluster.HasState(raftDir) {
		return nil // a member restarting: it rejoins with its data
	}
	if entries, err := os.ReadDir(storeDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%w: %s has a store but no cluster state: a node joins a cluster with an empty data directory (or --wipe to delete it)", ErrNotEmpty, cfg.DataDir)
	}
	return nil
}

// advertisedURL is the base URL peers reach this node's HTTP listener at.
func advertisedURL(cfg Config, bound string) (string, error) {
	if cfg.AdvertiseHTTP != "" {
		u, err := url.Parse(cfg.AdvertiseHTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("node: config: advertise http %q: want http(s)://host:port", cfg.AdvertiseHTTP)
		}
		if cfg.TLSCertFile != "" && u.Scheme != "https" {
			return "", fmt.Errorf("node: config: advertise http %q: the listener serves TLS, want https://host:port", cfg.AdvertiseHTTP)
		}
		return cfg.AdvertiseHTTP, nil
	}
	hostPort, err := cluster.Advertised("", bound, cfg.AdvertiseAddr) // as Raft's and gossip's
	if err != nil {
		return "", err
	}
	scheme := "http"
	if cfg.TLSCertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + hostPort, nil
}

// nodeCluster is the cluster as the API's ClusterService uses it: a leave
// also stops the node.
type nodeCluster struct{ n *Node }

func (c nodeCluster) Nodes(ctx context.Context) ([]*v1.NodeInfo, error) { return c.n.cl.Nodes(ctx) }
func (c nodeCluster) Status(ctx context.Context) *v1.NodeInfo           { return c.n.cl.LocalInfo() }
func (c nodeCluster) Join(ctx context.Context, peers []string) (int, error) {
	return c.n.cl.Join(ctx, peers)
}
func (c nodeCluster) RemoveNode(ctx context.Context, id string) error {
	return c.n.cl.RemoveNode(ctx, id)
}
func (c nodeCluster) ReadIndex(ctx context.Context) error { return c.n.cl.ReadIndex(ctx) }
func (c nodeCluster) IsLeader() bool                      { return c.n.cl.IsLeader() }

// Leave leaves the cluster, then stops the node once the answer is sent
// (Run returns): a node that left takes no part in the cluster any more.
func (c nodeCluster) Leave(ctx context.Context) error {
	// Count what was downloaded here before leaving.
	if err := c.n.downloads.Flush(ctx); err != nil {
		return fmt.Errorf("node: leave: flush download counts: %w", err)
	}
	if err := c.n.cl.Leave(ctx); err != nil {
		return err
	}
	c.n.stopOnce.Do(func() { close(c.n.stopRun) })
	return nil
}
