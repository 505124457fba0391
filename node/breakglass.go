package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"google.golang.org/protobuf/proto"
)

// RestoreOwner is the break-glass path of `condamesh admin restore-owner`:
// run on a stopped node's data directory, it gives username the server
// role owner (creating the user if it does not exist) through a Raft
// command, as any change, so the change is in the log and in snapshots.
// With newKey, or for a new user, it also issues an API key, returned
// once. The node's store is locked while it runs: a running node makes it
// fail. Its addresses are ephemeral loopback ports; nothing is served.
func RestoreOwner(ctx context.Context, cfg Config, username string, newKey bool) (key string, created bool, err error) {
	// The key secret must be the one the node serves with: a new one
	// would make the printed key useless, and every other key too.
	if cfg.KeySecretFile == "" {
		cfg.KeySecretFile = filepath.Join(cfg.DataDir, "api-key-secret")
	}
	if _, err := os.Stat(cfg.KeySecretFile); err != nil {
		return "", false, fmt.Errorf("node: restore owner: no API key secret at %s (%w): pass the --api-key-secret-file the node serves with, or start it once with this version", cfg.KeySecretFile, err)
	}
	cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr, cfg.DebugAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", ""
	n, err := New(ctx, cfg)
	if err != nil {
		return "", false, err
	}
	defer func() { err = errors.Join(err, n.Close(context.WithoutCancel(ctx))) }()
	if err := n.WaitReady(ctx); err != nil {
		return "", false, fmt.Errorf("node: restore owner: wait for raft: %w", err)
	}
	u, err := n.cat.UserByName(ctx, username)
	if errors.Is(err, catalog.ErrNotFound) {
		_, key, err := n.api.CreateUser(ctx, username, "", "owner")
		if err != nil {
			return "", false, fmt.Errorf("node: restore owner: create %s: %w", username, err)
		}
		return key, true, nil
	}
	if err != nil {
		return "", false, err
	}
	if u.Role != "owner" {
		u = proto.Clone(u).(*v1.User)
		u.Role = "owner"
		if _, err := n.cl.Propose(ctx, &v1.Command{Op: &v1.Command_PutUser{PutUser: &v1.PutUserOp{User: u}}}); err != nil {
			return "", false, fmt.Errorf("node: restore owner: %w", err)
		}
	}
	if newKey {
		if key, err = n.api.PresetKey(ctx, u, "break-glass key (condamesh admin restore-owner)", ""); err != nil {
			return "", false, fmt.Errorf("node: restore owner: issue key: %w", err)
		}
	}
	return key, false, nil
}
