package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"
)

// maxMeta is memberlist's bound on node metadata.
const maxMeta = memberlist.MetaMaxSize

// EncodeMeta encodes a node's gossip metadata, refusing what exceeds
// memberlist's 512-byte bound.
func EncodeMeta(m *v1.NodeMeta) ([]byte, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode node metadata: %w", err)
	}
	if len(b) > maxMeta {
		return nil, fmt.Errorf("%w: node metadata of %d bytes (at most %d): shorten --site or the advertised addresses", ErrConfig, len(b), maxMeta)
	}
	return b, nil
}

// DecodeMeta parses a peer's gossip metadata (untrusted input, fuzzed by
// FuzzDecodeMeta).
func DecodeMeta(b []byte) (*v1.NodeMeta, error) {
	if len(b) > maxMeta {
		return nil, fmt.Errorf("%w: node metadata of %d bytes", ErrBadPeer, len(b))
	}
	var m v1.NodeMeta
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: node metadata: %w", ErrBadPeer, err)
	}
	if m.RaftAddr != "" {
		if _, _, err := net.SplitHostPort(m.RaftAddr); err != nil {
			return nil, fmt.Errorf("%w: raft address %q", ErrBadPeer, m.RaftAddr)
		}
	}
	return &m, nil
}

// member is one gossip member as the cluster last heard of it.
type member struct {
	id     string
	addr   string // gossip host:port
	meta   *v1.NodeMeta
	state  memberlist.NodeStateType
	since  time.Time // when state last changed
	seenAt time.Time
}

// event is what a gossip callback queues for the reconciler.
type event struct {
	id    string
	addr  string
	meta  []byte
	state memberlist.NodeStateType // StateAlive or StateDead
	// join marks a (re)join: a node new to memberlist, or back after it
	// was dead or left. Only a join ends the left state.
	join bool
}

// gossipDelegate implements memberlist's delegates. Its callbacks only
// copy what they are given and queue it (never block, never call back into
// memberlist); the reconciler goroutine does the work.
type gossipDelegate struct {
	c *Cluster
}

func (d gossipDelegate) NodeMeta(limit int) []byte {
	b, err := EncodeMeta(d.c.localMeta())
	if err != nil || len(b) > limit {
		return nil // checked at Open; cannot happen after
	}
	return b
}

func (gossipDelegate) NotifyMsg([]byte)                           {}
func (gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (gossipDelegate) LocalState(join bool) []byte                { return nil }
func (gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

// queue hands a member's new state to the reconciler. The state comes
// from which callback ran: memberlist never sets the Node.State it passes
// (its own state lives in a field that shadows it), so n.State always
// reads StateAlive.
func (d gossipDelegate) queue(n *memberlist.Node, state memberlist.NodeStateType, join bool) {
	ev := event{id: n.Name, addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), meta: bytes.Clone(n.Meta), state: state, join: join}
	select {
	case d.c.events <- ev:
	default:
		d.c.eventsLost.Store(true) // the reconciler resyncs from Members()
	}
}

func (d gossipDelegate) NotifyJoin(n *memberlist.Node)   { d.queue(n, memberlist.StateAlive, true) }
func (d gossipDelegate) NotifyUpdate(n *memberlist.Node) { d.queue(n, memberlist.StateAlive, false) }

// NotifyLeave reports a member gone: dead, or left (memberlist does not
// say which). A member that left was marked so by the leader when it
// removed it from Raft on the member's request (members.markLeft).
func (d gossipDelegate) NotifyLeave(n *memberlist.Node) { d.queue(n, memberlist.StateDead, false) }

// NotifyMerge refuses a push/pull merge with members of another cluster. A
// node that belongs to no cluster yet adopts the peers' cluster id.
func (d gossipDelegate) NotifyMerge(peers []*memberlist.Node) error {
	return d.c.refusals.note(d.merge(peers))
}

func (d gossipDelegate) merge(peers []*memberlist.Node) error {
	theirs := ""
	for _, p := range peers {
		if p.Name == d.c.cfg.NodeID {
			continue
		}
		m, err := DecodeMeta(p.Meta)
		if err != nil {
			return err
		}
		if err := d.c.checkPeerMeta(p.Name, m); err != nil {
			return err
		}
		if m.ClusterId == "" {
			continue
		}
		if theirs != "" && theirs != m.ClusterId {
			return fmt.Errorf("%w: peers of two clusters (%s, %s)", ErrOtherCluster, theirs, m.ClusterId)
		}
		theirs = m.ClusterId
	}
	return d.c.adoptClusterID(theirs)
}

// NotifyAlive refuses a member of another cluster (or with another API key
// secret) before memberlist counts it as a peer.
func (d gossipDelegate) NotifyAlive(p *memberlist.Node) error {
	if p.Name == d.c.cfg.NodeID {
		return nil
	}
	m, err := DecodeMeta(p.Meta)
	if err != nil {
		return err
	}
	return d.c.checkPeerMeta(p.Name, m)
}

// checkPeerMeta refuses a peer of another cluster or with a different
// API key secret.
func (c *Cluster) checkPeerMeta(name string, m *v1.NodeMeta) error {
	local := c.ClusterID()
	if local != "" && m.ClusterId != "" && m.ClusterId != local {
		c.log.Warn("refused a member of another cluster", "peer", name, "peer_cluster", m.ClusterId, "cluster", local)
		return fmt.Errorf("%w: %s belongs to cluster %s, this node to %s (a node joins another cluster only with an empty data directory)", ErrOtherCluster, name, m.ClusterId, local)
	}
	if fp := c.cfg.SecretFingerprint; fp != "" && m.SecretFingerprint != "" && m.SecretFingerprint != fp {
		c.log.Warn("refused a member with another API key secret", "peer", name)
		return fmt.Errorf("%w: %s has another API key secret (every node needs the same api-key-secret file: copy it from a member)", ErrOtherCluster, name)
	}
	return nil
}

// adoptClusterID makes a node that belongs to no cluster a member of id
// (persisted before gossip announces it).
func (c *Cluster) adoptClusterID(id string) error {
	if id == "" {
		return nil
	}
	c.idMu.Lock()
	defer c.idMu.Unlock()
	switch c.clusterID {
	case id:
		return nil
	case "":
	default:
		return fmt.Errorf("%w: peers belong to cluster %s, this node to %s", ErrOtherCluster, id, c.clusterID)
	}
	if err := writeFileSync(c.clusterIDPath(), []byte(id+"\n")); err != nil {
		return fmt.Errorf("cluster: persist cluster id: %w", err)
	}
	c.clusterID = id
	c.log.Info("joined cluster", "cluster", id)
	go c.announce() // memberlist must not be called from its callback
	return nil
}

// announce re-sends this node's metadata after it changed.
func (c *Cluster) announce() {
	if c.ml == nil {
		return
	}
	if err := c.ml.UpdateNode(2 * time.Second); err != nil {
		c.log.Debug("gossip update", "err", err)
	}
}

// refusals remembers the last merge refused for being another cluster's:
// memberlist's Join keeps only the text of a merge error, so Join looks
// here for the typed error to answer with.
type refusals struct {
	mu   sync.Mutex
	n    uint64
	last error
}

// note records err if it refuses another cluster, and returns it.
func (r *refusals) note(err error) error {
	if errors.Is(err, ErrOtherCluster) {
		r.mu.Lock()
		r.n++
		r.last = err
		r.mu.Unlock()
	}
	return err
}

// count is the number of refusals so far.
func (r *refusals) count() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// since returns the last refusal if there was one after count was n.
func (r *refusals) since(n uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == n {
		return nil
	}
	return r.last
}

// members is the reconciler's table of gossip members.
type members struct {
	mu sync.Mutex
	m  map[string]*member
}

func (ms *members) apply(ev event, now time.Time) {
	meta, err := DecodeMeta(ev.meta)
	if err != nil {
		meta = &v1.NodeMeta{}
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.m == nil {
		ms.m = map[string]*member{}
	}
	cur := ms.m[ev.id]
	if cur == nil {
		cur = &member{id: ev.id, since: now, state: ev.state}
		ms.m[ev.id] = cur
	}
	state := ev.state
	if cur.state == memberlist.StateLeft && !ev.join {
		state = memberlist.StateLeft // it left; only a new join brings it back
	}
	if cur.state != state {
		cur.since = now
	}
	cur.addr, cur.meta, cur.state, cur.seenAt = ev.addr, meta, state, now
}

// markLeft records that id left the cluster (removed from Raft on
// purpose): the reconciler does not add it back until it joins gossip
// again, even if gossip still reports it alive until its leave spreads.
func (ms *members) markLeft(id string, now time.Time) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if m := ms.m[id]; m != nil && m.state != memberlist.StateLeft {
		m.state, m.since = memberlist.StateLeft, now
	}
}

func (ms *members) get(id string) (member, bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m, ok := ms.m[id]
	if !ok {
		return member{}, false
	}
	return *m, true
}

func (ms *members) list() []member {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	out := make([]member, 0, len(ms.m))
	for _, m := range ms.m {
		out = append(out, *m)
	}
	return out
}

func (ms *members) forget(id string) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	delete(ms.m, id)
}

// stateName is a gossip state as the API shows it.
func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateLeft:
		return "left"
	default:
		return "dead"
	}
}

var errNoPeers = errors.New("no peer answered")
