package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"github.com/hashicorp/raft"
)

// openDisk opens a catalog machine on a store in dir.
func openDisk(t *testing.T, dir string) *testMachine {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &testMachine{cat: catalog.New(st, nil), st: st}
}

// openCluster starts a one-voter cluster on sm in dir and waits until it
// leads and has applied its log.
func openCluster(t *testing.T, dir string, sm stateMachine) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Open(ctx, Config{
		NodeID: "n1", Dir: dir, RaftAddr: "127.0.0.1:0", Bootstrap: true,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond,
	}, sm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func putVersion(t *testing.T, c *Cluster, i int) {
	t.Helper()
	_, err := c.Propose(context.Background(), &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{OwnerId: "u1", Versions: []*v1.PackageVersion{{
		Channel: "chan", Package: fmt.Sprintf("p%d", i), Platform: "noarch", Filename: fmt.Sprintf("p%d-1-0.conda", i), Size: 10, RecordJson: []byte(`{}`),
	}}}}})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenRestoresSnapshotTheFSMIsBehind: Raft holds a snapshot whose index
// is above the state machine's applied index (as after a crash between
// Raft persisting an installed snapshot and the store restoring it; here the
// store is rolled back to an older copy of itself). Reopening must bring the
// state machine up to the snapshot instead of replaying only what follows it.
func TestOpenRestoresSnapshotTheFSMIsBehind(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	raftDir, storeDir := filepath.Join(base, "raft"), filepath.Join(base, "store")

	sm := openDisk(t, storeDir)
	c := openCluster(t, raftDir, sm)
	for _, cmd := range []*v1.Command{
		{Op: &v1.Command_PutUser{PutUser: &v1.PutUserOp{User: &v1.User{Id: "u1", Username: "alice", Role: "owner"}}}},
		{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "chan"}, OwnerId: "u1"}}},
	} {
		if _, err := c.Propose(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	putVersion(t, c, 0)
	// The older state the store will be rolled back to.
	old, err := sm.st.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var oldBytes bytes.Buffer
	if err := old.WriteTo(ctx, &oldBytes); err != nil {
		t.Fatal(err)
	}
	oldIndex := old.AppliedIndex()
	old.Close()
	for i := 1; i < 20; i++ {
		putVersion(t, c, i)
	}
	if err := c.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	snapIndex := c.AppliedIndex()
	want := dump(t, sm.st)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sm.st.Restore(ctx, &oldBytes); err != nil {
		t.Fatal(err)
	}
	if idx, _ := sm.st.AppliedIndex(ctx); idx != oldIndex || idx >= snapIndex {
		t.Fatalf("rolled-back store at %d, want %d (below the snapshot's %d)", idx, oldIndex, snapIndex)
	}

	c = openCluster(t, raftDir, sm)
	if got := dump(t, sm.st); !bytes.Equal(got, want) {
		ch, _ := sm.cat.Channel(ctx, "chan")
		t.Fatalf("after reopen the state machine is behind the raft snapshot (channel size %d, want 200)", ch.GetSize())
	}
	if idx, _ := sm.st.AppliedIndex(ctx); idx < snapIndex {
		t.Fatalf("applied index %d after reopen, below the snapshot's %d", idx, snapIndex)
	}
	// And it goes on applying.
	putVersion(t, c, 20)
	if ch, err := sm.cat.Channel(ctx, "chan"); err != nil || ch.Size != 210 {
		t.Fatalf("channel after a new write: %v %v", ch, err)
	}
}

// appliedAt is a state machine that only answers its applied index.
type appliedAt struct {
	stateMachine
	idx uint64
	err error
}

func (a appliedAt) AppliedIndex(context.Context) (uint64, error) { return a.idx, a.err }

// TestRestoreOnStart: the snapshot is restored on start only when the state
// machine is behind it (or its index cannot be read), so an ordinary
// restart does not rewrite the whole catalog.
func TestRestoreOnStart(t *testing.T) {
	withSnapshot := func(index uint64) raft.SnapshotStore {
		s := raft.NewInmemSnapshotStore()
		sink, err := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = sink.Close()
		return s
	}
	cases := []struct {
		name  string
		snaps raft.SnapshotStore
		sm    appliedAt
		want  bool
	}{
		{"no snapshot", raft.NewInmemSnapshotStore(), appliedAt{idx: 0}, false},
		{"caught up", withSnapshot(25), appliedAt{idx: 25}, false},
		{"ahead", withSnapshot(25), appliedAt{idx: 40}, false},
		{"behind", withSnapshot(25), appliedAt{idx: 6}, true},
		{"empty store", withSnapshot(25), appliedAt{idx: 0}, true},
		{"unreadable index", withSnapshot(25), appliedAt{err: store.ErrClosed}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := restoreOnStart(context.Background(), c.sm, c.snaps, slog.New(slog.DiscardHandler)); got != c.want {
				t.Fatalf("restoreOnStart = %v, want %v", got, c.want)
			}
		})
	}
}
