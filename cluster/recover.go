package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// PeersFile is the name, in the Raft directory (<data-dir>/raft), of the
// file that recovers a cluster that lost its quorum: placed on every
// surviving node before they restart, it replaces their Raft
// configuration with the servers it lists (hashicorp/raft's peers.json
// format: [{"id": ..., "address": ..., "non_voter": false}]). It is read
// once and renamed to peers.json.applied.
const PeersFile = "peers.json"

// recoverFromPeersJSON applies a peers.json if there is one.
func recoverFromPeersJSON(rc *raft.Config, dir string, sm stateMachine, logs *boltStore, snaps raft.SnapshotStore, trans raft.Transport, lg *slog.Logger) (bool, error) {
	p := filepath.Join(dir, PeersFile)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	conf, err := raft.ReadConfigJSON(p)
	if err != nil {
		return false, fmt.Errorf("%w: %s: %w", ErrConfig, p, err)
	}
	lg.Warn("recovering the cluster from peers.json: the raft configuration is replaced", "servers", len(conf.Servers))
	if err := raft.RecoverCluster(rc, recoveryFSM{newFSM(sm, lg)}, logs, logs, snaps, trans, conf); err != nil {
		return false, fmt.Errorf("cluster: recover from %s: %w", p, err)
	}
	if err := os.Rename(p, p+".applied"); err != nil {
		return false, fmt.Errorf("cluster: recover: %w", err)
	}
	return true, nil
}

// recoveryFSM is the FSM RecoverCluster gets: RecoverCluster persists the
// snapshot it takes but never releases it, which left a Pebble snapshot
// open (and the store then failed to close: "leaked snapshots").
type recoveryFSM struct{ *fsm }

func (r recoveryFSM) Snapshot() (raft.FSMSnapshot, error) {
	s, err := r.fsm.Snapshot()
	if err != nil {
		return nil, err
	}
	return releasedAfterPersist{s}, nil
}

type releasedAfterPersist struct{ raft.FSMSnapshot }

func (s releasedAfterPersist) Persist(sink raft.SnapshotSink) error {
	defer s.Release()
	return s.FSMSnapshot.Persist(sink)
}

type boltStore = raftboltdb.BoltStore
