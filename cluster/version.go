package cluster

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

// UnsupportedCommandError describes a log entry this build cannot apply.
type UnsupportedCommandError struct {
	// Version is the command version the entry says it needs; 0 when it
	// does not say (an unknown operation from a proposer without versions).
	Version uint32
	// UnknownOp is set when the entry's operation is not one this build knows.
	UnknownOp bool
}

func (e *UnsupportedCommandError) Error() string {
	what := fmt.Sprintf("version %d", e.Version)
	if e.UnknownOp {
		what = fmt.Sprintf("an unknown operation (command version %d)", e.Version)
	}
	return fmt.Sprintf("cluster: command needs a newer version: it needs %s, this build applies up to version %d", what, catalog.ProtocolVersion)
}

// Unwrap lets errors.Is(err, ErrUnsupportedCommand) succeed.
func (e *UnsupportedCommandError) Unwrap() error { return ErrUnsupportedCommand }

// checkVersion reports an entry that needs a newer build: a version above
// catalog.ProtocolVersion, or no operation this build knows while carrying
// fields it does not know (a newer proposer's operation). A command without
// any operation and nothing unknown is merely malformed (ErrBadCommand).
func checkVersion(cmd *v1.Command) error {
	if cmd.GetVersion() > catalog.ProtocolVersion {
		return &UnsupportedCommandError{Version: cmd.GetVersion(), UnknownOp: cmd.GetOp() == nil}
	}
	if cmd.GetOp() == nil && len(cmd.ProtoReflect().GetUnknown()) > 0 {
		return &UnsupportedCommandError{Version: cmd.GetVersion(), UnknownOp: true}
	}
	return nil
}

// stampVersion sets the command version a proposed command needs.
func stampVersion(cmd *v1.Command) {
	if cmd.Version == 0 {
		cmd.Version = catalog.RequiredVersion(cmd)
	}
}

// halter stops the FSM for good at an entry it cannot apply.
//
// hashicorp/raft cannot be told to stop applying, and skipping the entry (or
// answering it with an error) would let this node go on applying later
// entries without the effect of one it did not understand: it would diverge
// from every node that did. So the FSM's Apply does not return for such an
// entry until the cluster shuts down: Raft's FSM goroutine is blocked, no
// later entry is applied, the store keeps its applied index before the entry
// (a restart halts at the same place), and the node says why in its log and
// through Cluster.Halted. Upgrading the binary resumes it.
type halter struct {
	mu     sync.Mutex
	reason string
	stop   chan struct{} // closed by shutdown
	closed bool
}

func newHalter() *halter { return &halter{stop: make(chan struct{})} }

// halt records why applying stopped at index, logs it, and blocks until
// shutdown.
func (h *halter) halt(lg *slog.Logger, index uint64, err *UnsupportedCommandError) {
	reason := fmt.Sprintf("stopped applying the Raft log at index %d: %v; upgrade this node", index, err)
	h.mu.Lock()
	h.reason = reason
	h.mu.Unlock()
	lg.Error("stopped applying the Raft log: an entry needs a newer version of condamesh; upgrade this node",
		"index", index, "needs_version", err.Version, "unknown_operation", err.UnknownOp, "protocol_version", catalog.ProtocolVersion)
	<-h.stop
}

// halted is the reason applying stopped, "" while it runs.
func (h *halter) halted() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reason
}

// shutdown unblocks a halted Apply; every Apply after it returns at once
// without touching the state machine.
func (h *halter) shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.stop)
	}
}

func (h *halter) stopped() bool {
	select {
	case <-h.stop:
		return true
	default:
		return false
	}
}

// Halted is why this node stopped applying the Raft log (an entry that needs
// a newer build), or "" while it applies normally. Health checks report it:
// a halted node falls further behind with every write.
func (c *Cluster) Halted() string { return c.fsm.halt.halted() }
