package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// testMachine is the catalog on a store, as node wires it.
type testMachine struct {
	cat *catalog.Catalog
	st  *store.Store
}

func (m *testMachine) Apply(ctx context.Context, i uint64, c *v1.Command) (any, error) {
	return m.cat.Apply(ctx, i, c)
}
func (m *testMachine) Snapshot(ctx context.Context) (*store.Snapshot, error) {
	return m.st.Snapshot(ctx)
}
func (m *testMachine) Restore(ctx context.Context, r io.Reader) error { return m.st.Restore(ctx, r) }
func (m *testMachine) AppliedIndex(ctx context.Context) (uint64, error) {
	return m.st.AppliedIndex(ctx)
}
func (m *testMachine) EncodeResult(v any, err error) *v1.ApplyResult {
	return catalog.EncodeResult(v, err)
}
func (m *testMachine) DecodeResult(r *v1.ApplyResult) (any, error) { return catalog.DecodeResult(r) }

func newMachine(t *testing.T) *testMachine {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Dir: "/d", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &testMachine{cat: catalog.New(st, nil), st: st}
}

func logOf(t *testing.T, idx uint64, cmd *v1.Command) *raft.Log {
	b, err := proto.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: idx, Data: b, Type: raft.LogCommand}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

// TestFSMRoundTrip applies commands through the FSM, snapshots, restores
// into a fresh machine and compares the replicated keyspaces; it also checks
// replayed entries are no-ops and bad entries change nothing.
func TestFSMRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := newMachine(t)
	f := newFSM(src, slog.Default())
	cmds := []*v1.Command{
		{TimeUnixNano: 1e18, Op: &v1.Command_PutUser{PutUser: &v1.PutUserOp{User: &v1.User{Id: "u1", Username: "alice", Role: "owner"}}}},
		{TimeUnixNano: 1e18, Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "Chan", Ttl: 10}, OwnerId: "u1"}}},
	}
	for i := range 50 {
		cmds = append(cmds, &v1.Command{TimeUnixNano: 1e18, Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{OwnerId: "u1", Versions: []*v1.PackageVersion{{
			Channel: "chan", Package: fmt.Sprintf("p%d", i), Platform: "noarch", Filename: fmt.Sprintf("p%d-1-0.conda", i), Size: 10, RecordJson: []byte(`{}`),
		}}}}})
	}
	for i, c := range cmds {
		res := f.Apply(logOf(t, uint64(i+1), c)).(applyResult)
		if res.err != nil {
			t.Fatalf("apply %d: %v", i, res.err)
		}
	}
	// A replay of an applied index is ignored, even if it would now fail.
	if res := f.Apply(logOf(t, 2, cmds[1])).(applyResult); res.err != nil {
		t.Fatalf("replayed create: %v", res.err)
	}
	// A duplicate at a new index fails and changes nothing but the index.
	before := dump(t, src.st)
	res := f.Apply(logOf(t, 100, cmds[1])).(applyResult)
	if !errors.Is(res.err, catalog.ErrExists) {
		t.Fatalf("duplicate channel: %v", res.err)
	}
	if res := f.Apply(&raft.Log{Index: 101, Data: []byte{0xff, 0x01}}).(applyResult); !errors.Is(res.err, ErrBadCommand) {
		t.Fatalf("garbage entry: %v", res.err)
	}
	if after := dump(t, src.st); !bytes.Equal(before, after) {
		t.Fatal("failed commands changed replicated state")
	}
	ch, err := src.cat.Channel(ctx, "CHAN")
	if err != nil || ch.Size != 500 {
		t.Fatalf("channel after applies: %v %v", ch, err)
	}

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dst := newMachine(t)
	if err := (newFSM(dst, slog.Default())).Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dump(t, src.st), dump(t, dst.st)) {
		t.Fatal("restored state differs")
	}
	if idx, _ := dst.st.AppliedIndex(ctx); idx != 100 { // 101 never decoded, so it never reached the store
		t.Fatalf("restored applied index %d, want 100", idx)
	}
}

func dump(t *testing.T, st *store.Store) []byte {
	var b bytes.Buffer
	err := st.Scan(context.Background(), []byte(store.ReplicatedPrefix), func(k, v []byte) error {
		b.Write(k)
		b.Write(v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// FuzzDecodeCommand feeds arbitrary log entries to the decoder and, when
// they decode, to a real catalog: neither may panic, and what decodes is
// something this build applies.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []*v1.Command{
		{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}},
		{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: []*v1.PackageVersion{{Channel: "c", Package: "p", Platform: "noarch", Filename: "p-1-0.conda"}}}}},
		{Op: &v1.Command_UpdateChannel{UpdateChannel: &v1.UpdateChannelOp{Channel: &v1.Channel{Name: "c", Ttl: 5}, Fields: []string{"ttl", "metadata.prune", "metadata.includelist.items"}}}},
		{Op: &v1.Command_DeleteChannel{DeleteChannel: &v1.DeleteChannelOp{Name: "c"}}},
		{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Manifest: "reindex"}}}},
	} {
		b, _ := proto.Marshal(c)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff})
	f.Add(unknownOp())
	newer, _ := proto.Marshal(&v1.Command{Version: catalog.ProtocolVersion + 1, Op: &v1.Command_DeleteChannel{DeleteChannel: &v1.DeleteChannelOp{Name: "c"}}})
	f.Add(newer)
	m := newMachineFuzz(f)
	var idx uint64
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := DecodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) && !errors.Is(err, ErrUnsupportedCommand) {
				t.Fatalf("decode error neither ErrBadCommand nor ErrUnsupportedCommand: %v", err)
			}
			return
		}
		if cmd.GetVersion() > catalog.ProtocolVersion || cmd.GetOp() == nil {
			t.Fatalf("decoded a command this build cannot apply: version %d, op %v", cmd.GetVersion(), cmd.GetOp())
		}
		idx++
		_, _ = m.cat.Apply(context.Background(), idx, cmd)
	})
}

func newMachineFuzz(f *testing.F) *testMachine {
	st, err := store.Open(context.Background(), store.Config{Dir: "/d", FS: vfs.NewMem()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	return &testMachine{cat: catalog.New(st, nil), st: st}
}
