package cluster

import "errors"

// Sentinel errors returned by the cluster.
var (
	// ErrNotLeader: no leader could be reached to apply a command or
	// confirm a read (an election is under way, or this node is cut off).
	ErrNotLeader = errors.New("cluster: no leader reachable")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("cluster: closed")
	// ErrBadCommand is returned for a log entry that is not a valid Command.
	ErrBadCommand = errors.New("cluster: bad command")
	// ErrConfig is a configuration that cannot work.
	ErrConfig = errors.New("cluster: config")
	// ErrBadPeer is a peer's message that does not parse.
	ErrBadPeer = errors.New("cluster: bad peer message")
	// ErrOtherCluster refuses a peer of another cluster (or with another
	// API key secret).
	ErrOtherCluster = errors.New("cluster: peer of another cluster")
	// ErrUnknownNode: no member has that id.
	ErrUnknownNode = errors.New("cluster: unknown node")
	// ErrNoQuorum refuses a change that would leave the cluster without a
	// quorum of live voters.
	ErrNoQuorum = errors.New("cluster: change would lose quorum")
	// ErrJoin: no peer of a join answered.
	ErrJoin = errors.New("cluster: join: no peer answered")
	// ErrNotMember refuses a node-to-node call from a caller that is not a
	// cluster member.
	ErrNotMember = errors.New("cluster: caller is not a cluster member")
	// ErrUnsupportedCommand is returned (wrapped in *UnsupportedCommandError)
	// by DecodeCommand for a well-formed entry this build cannot apply: its
	// version is above catalog.ProtocolVersion, or its operation is unknown.
	ErrUnsupportedCommand = errors.New("cluster: command needs a newer version")
	// ErrHalted is returned by Propose on a node that stopped applying the
	// log at an entry it cannot apply (see Cluster.Halted).
	ErrHalted = errors.New("cluster: applying halted")
)
