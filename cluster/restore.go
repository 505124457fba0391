package cluster

import (
	"context"
	"log/slog"

	"github.com/hashicorp/raft"
)

// restoreOnStart decides whether Raft must restore its newest snapshot into
// the state machine when it starts (raft.Config.NoSnapshotRestoreOnStart is
// its negation).
//
// The state machine is persistent (Pebble), so normally Raft only replays
// the log after the newest snapshot and the store skips what it has applied.
// But Raft persists an installed snapshot before the state machine restores
// it, and then starts applying after the snapshot's index: a node that
// stopped between the two (a crash, a failed or interrupted restore) would
// come back silently behind, missing every entry the snapshot covers. So the
// state machine's applied index is compared with the newest snapshot's: if it
// is lower, or cannot be read, the snapshot is restored on start.
func restoreOnStart(ctx context.Context, sm stateMachine, snaps raft.SnapshotStore, lg *slog.Logger) bool {
	metas, err := snaps.List()
	if err != nil {
		lg.Error("cannot list raft snapshots; restoring the newest on start", "err", err)
		return true // Raft lists them again and fails Open if it cannot
	}
	if len(metas) == 0 {
		return false
	}
	newest := metas[0]
	applied, err := sm.AppliedIndex(ctx)
	if err != nil {
		lg.Error("cannot read the state machine's applied index; restoring the newest raft snapshot on start",
			"snapshot", newest.ID, "snapshot_index", newest.Index, "err", err)
		return true
	}
	if applied >= newest.Index {
		return false
	}
	lg.Warn("state machine is behind the newest raft snapshot (a snapshot install did not finish); restoring it on start",
		"applied_index", applied, "snapshot", newest.ID, "snapshot_index", newest.Index)
	return true
}
