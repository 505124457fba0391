package cluster

import "errors"

// Sentinel errors returned by the cluster.
var (
	// ErrNotLeader is returned by Propose on a node that is not the leader
	// (and cannot forward).
	ErrNotLeader = errors.New("cluster: not leader")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("cluster: closed")
	// ErrBadCommand is returned for a log entry that is not a valid Command.
	ErrBadCommand = errors.New("cluster: bad command")
	// ErrUnsupportedCommand is returned (wrapped in *UnsupportedCommandError)
	// by DecodeCommand for a well-formed entry this build cannot apply: its
	// version is above catalog.ProtocolVersion, or its operation is unknown.
	ErrUnsupportedCommand = errors.New("cluster: command needs a newer version")
	// ErrHalted is returned by Propose on a node that stopped applying the
	// log at an entry it cannot apply (see Cluster.Halted).
	ErrHalted = errors.New("cluster: applying halted")
)
