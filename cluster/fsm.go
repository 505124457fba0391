package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// stateMachine is what the FSM needs from the metadata owner (the catalog
// and its store). Apply must be deterministic and idempotent per index.
type stateMachine interface {
	Apply(ctx context.Context, index uint64, cmd *v1.Command) (any, error)
	Snapshot(ctx context.Context) (*store.Snapshot, error)
	Restore(ctx context.Context, r io.Reader) error
	// AppliedIndex is the last index the state machine stored.
	AppliedIndex(ctx context.Context) (uint64, error)
	// EncodeResult and DecodeResult carry Apply's result from the leader
	// to a follower that forwarded the command; the decoded error must
	// match the same sentinel errors.
	EncodeResult(val any, err error) *v1.ApplyResult
	DecodeResult(r *v1.ApplyResult) (any, error)
}

// fsm adapts raft.FSM onto a stateMachine and tracks the applied index, so
// that a follower can wait for its own apply of a forwarded command.
type fsm struct {
	sm      stateMachine
	log     *slog.Logger
	applied atomic.Uint64
	mu      sync.Mutex
	changed chan struct{} // closed and replaced when applied moves
	halt    *halter
}

var _ raft.FSM = (*fsm)(nil)

func newFSM(sm stateMachine, log *slog.Logger) *fsm {
	if log == nil {
		log = slog.Default()
	}
	f := &fsm{sm: sm, log: log, changed: make(chan struct{}), halt: newHalter()}
	if idx, err := sm.AppliedIndex(context.Background()); err == nil {
		f.applied.Store(idx)
	}
	return f
}

// applyResult is what raft hands back through ApplyFuture.Response.
type applyResult struct {
	val any
	err error
}

// DecodeCommand parses a Raft log entry. It is exported for fuzzing: log
// entries from a peer are untrusted input. An entry that is not a Command
// is ErrBadCommand; a well-formed one this build cannot apply (a newer
// version or operation) is *UnsupportedCommandError.
func DecodeCommand(data []byte) (*v1.Command, error) {
	var cmd v1.Command
	if err := proto.Unmarshal(data, &cmd); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if err := checkVersion(&cmd); err != nil {
		return nil, err
	}
	if cmd.GetOp() == nil {
		return nil, fmt.Errorf("%w: no operation", ErrBadCommand)
	}
	return &cmd, nil
}

// Apply applies one entry. An entry that does not decode is answered
// ErrBadCommand (alike on every replica), one the catalog refuses with the
// catalog's error; one that needs a newer build halts applying (halter).
func (f *fsm) Apply(l *raft.Log) any {
	if f.halt.stopped() {
		return applyResult{err: ErrClosed}
	}
	cmd, err := DecodeCommand(l.Data)
	if unsupported, ok := errors.AsType[*UnsupportedCommandError](err); ok {
		f.halt.halt(f.log, l.Index, unsupported) // returns only at shutdown
		return applyResult{err: err}
	}
	defer f.setApplied(l.Index)
	if err != nil {
		return applyResult{err: err}
	}
	val, err := f.sm.Apply(context.Background(), l.Index, cmd)
	return applyResult{val: val, err: err}
}

func (f *fsm) setApplied(idx uint64) {
	f.mu.Lock()
	if idx > f.applied.Load() {
		f.applied.Store(idx)
	}
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// waitApplied blocks until the state machine applied index idx.
func (f *fsm) waitApplied(ctx context.Context, idx uint64, stop <-chan struct{}) error {
	for {
		f.mu.Lock()
		ch := f.changed
		f.mu.Unlock()
		if f.applied.Load() >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("cluster: wait for apply of %d: %w", idx, ctx.Err())
		case <-stop:
			return ErrClosed
		}
	}
}

// Snapshot only captures a Pebble snapshot; Persist does the I/O.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	s, err := f.sm.Snapshot(context.Background())
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{s: s}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.sm.Restore(context.Background(), rc); err != nil {
		return err
	}
	if idx, err := f.sm.AppliedIndex(context.Background()); err == nil {
		f.mu.Lock()
		f.applied.Store(idx)
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}
	return nil
}

type fsmSnapshot struct{ s *store.Snapshot }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.s.WriteTo(context.Background(), sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.s.Close() }
