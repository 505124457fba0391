// Package store is condamesh's local persistence: a Pebble database holding
// the metadata keyspace, and a content-addressed blob store whose names are
// CIDv1 (raw codec, sha2-256 multihash).
//
// The store knows nothing of Raft, gossip, HTTP or conda. Callers decide what
// keys mean; the store guarantees atomic batches, the applied-index record
// written in the same batch as the state it describes, streaming snapshots of
// the replicated keyspace, and blobs that are only visible once they are whole,
// verified and durable. DESIGN.md documents the key layout and failure modes.
//
// Key layout (all keys are byte strings; "/" is only a visual separator):
//
//	m/<rest>            replicated metadata. Written only through ApplyBatch
//	                    (the Raft FSM); streamed by snapshots and replaced by
//	                    Restore. Subkeys belong to the caller (see catalog).
//	s/applied           uint64 big-endian: last Raft index applied to m/.
//	                    Committed in the same batch as the m/ writes it covers.
//	b/<cid>             blob index record (kind, size, verified-at, and the
//	                    bytes themselves for inline blobs). A blob exists iff
//	                    this key exists.
//	l/<rest>            local, derived, non-replicated state (for example the
//	                    pointers to this node's generated index files). Never
//	                    in snapshots; can always be rebuilt from m/ and b/.
//
// On disk, next to the Pebble directory:
//
//	<dir>/pebble/                      the Pebble database
//	<dir>/blobs/<xx>/<cid>             file blobs, xx = last two characters of the CID
//	<dir>/tmp/<random>                 blobs being written; removed on Open
//	<dir>/tmp/restore-<random>-<n>.sst table files of a snapshot being restored; removed on Open
package store
