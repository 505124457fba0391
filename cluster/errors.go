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
)
