// Package cluster runs Raft for condamesh: it owns the Raft log, its
// transport and snapshots, turns proposals into log entries (Propose), and
// adapts the Raft FSM contract onto a small stateMachine interface that the
// catalog satisfies. A single node is a one-voter cluster bootstrapped alone,
// so clustering adds nodes, not a second code path. Gossip membership
// (memberlist) and leader forwarding will live here too. See DESIGN.md.
package cluster
