package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// kick wakes the reconciler.
func (c *Cluster) kick() {
	select {
	case c.events <- event{}:
	default:
	}
}

// reconcileLoop applies gossip events to the member table and, on the
// leader, turns membership into Raft configuration. It is the only
// goroutine that changes the Raft configuration on its own.
func (c *Cluster) reconcileLoop() {
	defer c.wg.Done()
	tick := time.NewTicker(time.Second)
	if c.cfg.Fast {
		tick.Reset(200 * time.Millisecond)
	}
	defer tick.Stop()
	caught := map[string]time.Time{} // non-voter id -> caught up since
	var lastReconnect time.Time
	for {
		select {
		case <-c.stop:
			return
		case ev := <-c.events:
			if ev.id != "" {
				c.members.apply(ev, time.Now())
				if ev.state == memberlist.StateAlive {
					c.savePeers()
				}
			}
			// Drain what else is queued before reconciling once.
			for more := true; more; {
				select {
				case ev := <-c.events:
					if ev.id != "" {
						c.members.apply(ev, time.Now())
					}
				default:
					more = false
				}
			}
		case <-tick.C:
		}
		if c.eventsLost.Swap(false) && c.ml != nil {
			c.resync()
		}
		if c.ml != nil && time.Since(lastReconnect) >= c.reconnectEvery() {
			lastReconnect = time.Now()
			c.reconnect()
		}
		if c.IsLeader() && c.ml != nil && !c.left.Load() {
			if err := c.reconcile(caught); err != nil && !c.closed.Load() {
				c.log.Warn("reconcile membership", "err", err)
			}
		}
	}
}

// reconnectFor is how long a node keeps trying to reach a member it
// holds dead (as serf's reconnect timeout).
const reconnectFor = 24 * time.Hour

func (c *Cluster) reconnectEvery() time.Duration {
	if c.cfg.Fast {
		return time.Second
	}
	return 10 * time.Second
}

// reconnect pushes this node's state to the members it holds dead (not
// left), in the background, one round at a time. Gossip alone does not
// heal a partition once each side holds the other dead: memberlist
// probes and push/pulls only members it holds alive, and gossips to the
// dead only for a short while (and then only its pending broadcasts), so
// a node reachable again stayed dead in some views (and a leader could
// reap a healthy server from Raft).
func (c *Cluster) reconnect() {
	now := time.Now()
	var addrs []string
	for _, m := range c.members.list() {
		if m.state == memberlist.StateDead && m.id != c.cfg.NodeID && now.Sub(m.since) < reconnectFor {
			addrs = append(addrs, m.addr)
		}
	}
	if len(addrs) == 0 || !c.reconnecting.CompareAndSwap(false, true) {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.reconnecting.Store(false)
		if n, _ := c.ml.Join(addrs); n > 0 {
			c.log.Debug("reached members held dead", "reached", n, "of", len(addrs))
		}
	}()
}

// resync rebuilds the member table from memberlist after queued events
// were dropped.
func (c *Cluster) resync() {
	now := time.Now()
	seen := map[string]bool{}
	for _, n := range c.ml.Members() {
		gossipDelegate{c}.queue(n, memberlist.StateAlive, false) // copied under memberlist's lock
		seen[n.Name] = true
	}
	for _, m := range c.members.list() {
		if !seen[m.id] && m.state != memberlist.StateLeft && m.state != memberlist.StateDead {
			c.members.apply(event{id: m.id, addr: m.addr, state: memberlist.StateDead}, now)
		}
	}
}

// reconcile runs on the leader: add live members of this cluster as
// non-voters, promote caught-up non-voters while voters are short, remove
// members that left at once and dead ones after ReapAfter, never below a
// quorum of live voters.
func (c *Cluster) reconcile(caught map[string]time.Time) error {
	cf := c.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	conf := cf.Configuration()
	now := time.Now()
	local := c.ClusterID()
	inConf := map[string]raft.Server{}
	for _, s := range conf.Servers {
		inConf[string(s.ID)] = s
	}
	var errs []error
	for _, m := range c.members.list() {
		if m.id == c.cfg.NodeID || m.meta == nil || m.meta.ClusterId != local || m.meta.RaftAddr == "" {
			continue
		}
		s, ok := inConf[m.id]
		if m.state == memberlist.StateAlive && (!ok || string(s.Address) != m.meta.RaftAddr) {
			if ok { // same id, new address: replace the stale entry
				if err := c.raft.RemoveServer(s.ID, 0, 5*time.Second).Error(); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			// It must answer as itself on its advertised HTTP URL first
			// (with TLS: a certificate the CA verifies), so a gossip member
			// that cannot be a peer never enters the configuration.
			if st, err := c.peers.status(context.Background(), m.meta.HttpUrl); err != nil || st.GetId() != m.id {
				c.log.Debug("not adding a member that does not answer as a peer", "node", m.id, "err", err)
				continue
			}
			c.log.Info("adding node as non-voter", "node", m.id, "raft", m.meta.RaftAddr)
			if err := c.raft.AddNonvoter(raft.ServerID(m.id), raft.ServerAddress(m.meta.RaftAddr), 0, 5*time.Second).Error(); err != nil {
				errs = append(errs, err)
			}
			delete(caught, m.id)
		}
	}
	// Health of the others: alive in gossip, and (non-voters) caught up.
	commit := c.raft.CommitIndex()
	voters, healthyVoters := 0, 0
	alive := func(id string) bool {
		if id == c.cfg.NodeID {
			return true
		}
		m, ok := c.members.get(id)
		return ok && (m.state == memberlist.StateAlive || m.state == memberlist.StateSuspect)
	}
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			voters++
			if alive(string(s.ID)) {
				healthyVoters++
			}
		}
	}
	// Promotion, oldest caught-up first.
	var candidates []string
	for _, s := range conf.Servers {
		id := string(s.ID)
		if s.Suffrage != raft.Nonvoter || !alive(id) {
			delete(caught, id)
			continue
		}
		m, _ := c.members.get(id)
		if m.meta == nil || m.meta.NonVoter {
			continue
		}
		st, err := c.peers.status(context.Background(), m.meta.HttpUrl)
		if err != nil || st.GetAppliedIndex()+c.cfg.MaxLag < commit {
			delete(caught, id)
			continue
		}
		if _, ok := caught[id]; !ok {
			caught[id] = now
		}
		if now.Sub(caught[id]) >= c.cfg.PromoteAfter {
			candidates = append(candidates, id)
		}
	}
	sort.Slice(candidates, func(i, j int) bool { return caught[candidates[i]].Before(caught[candidates[j]]) })
	for _, id := range candidates {
		if healthyVoters >= c.cfg.Voters {
			break
		}
		c.log.Info("promoting node to voter", "node", id)
		if err := c.raft.AddVoter(raft.ServerID(id), inConf[id].Address, 0, 5*time.Second).Error(); err != nil {
			errs = append(errs, err)
			continue
		}
		voters++
		healthyVoters++
		delete(caught, id)
	}
	// Removal of servers that left, or are dead for ReapAfter.
	for _, s := range conf.Servers {
		id := string(s.ID)
		if id == c.cfg.NodeID {
			continue // a leader never removes itself
		}
		m, known := c.members.get(id)
		var remove bool
		switch {
		case known && m.state == memberlist.StateLeft:
			remove = true
		case known && m.state == memberlist.StateDead && now.Sub(m.since) >= c.cfg.ReapAfter:
			remove = true
		}
		if !remove {
			continue
		}
		if s.Suffrage == raft.Voter {
			// Never below a quorum of live voters, and never fewer voters
			// than wanted while the dead one still counts toward them.
			if healthyVoters < quorum(voters-1) || (m.state == memberlist.StateDead && voters-1 < min(c.cfg.Voters, 3)) {
				continue
			}
			voters--
		}
		c.log.Info("removing node from raft", "node", id, "gossip", stateName(m.state))
		if err := c.raft.RemoveServer(s.ID, 0, 5*time.Second).Error(); err != nil {
			errs = append(errs, err)
			continue
		}
		if m.state == memberlist.StateLeft {
			c.members.forget(id)
		}
	}
	return errors.Join(errs...)
}

func quorum(voters int) int { return voters/2 + 1 }

// removeServer removes id from Raft (leader only), refusing to remove the
// last live voters' quorum.
func (c *Cluster) removeServer(id string) error {
	cf := c.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	var found *raft.Server
	voters, aliveVoters := 0, 0
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == id {
			found = &s
		}
		if s.Suffrage == raft.Voter {
			voters++
			m, ok := c.members.get(string(s.ID))
			if string(s.ID) == c.cfg.NodeID || (ok && m.state == memberlist.StateAlive) {
				aliveVoters++
			}
		}
	}
	if found == nil {
		return fmt.Errorf("%w: %s is not in the raft configuration", ErrUnknownNode, id)
	}
	if found.Suffrage == raft.Voter {
		m, ok := c.members.get(id)
		wasAlive := id == c.cfg.NodeID || (ok && m.state == memberlist.StateAlive)
		left := aliveVoters
		if wasAlive {
			left--
		}
		if left < quorum(voters-1) {
			return fmt.Errorf("%w: removing %s leaves %d live voters of %d", ErrNoQuorum, id, left, voters-1)
		}
	}
	// Before the removal: a reconcile that still sees it alive then also
	// still sees it in the configuration, so it does not add it back.
	c.members.markLeft(id, time.Now())
	return c.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error()
}

// Join asks gossip to join the members at peers (gossip host:port). It
// answers how many peers were reached; a peer of another cluster is
// refused.
func (c *Cluster) Join(ctx context.Context, peers []string) (int, error) {
	if c.ml == nil {
		return 0, fmt.Errorf("%w: gossip is off", ErrConfig)
	}
	before := c.refusals.count()
	n, err := c.ml.Join(peers)
	if n == 0 {
		if refused := c.refusals.since(before); refused != nil {
			// memberlist's error keeps only the text
			return 0, fmt.Errorf("cluster: join %v: %w", peers, refused)
		}
		if err == nil {
			err = errNoPeers
		}
		return 0, fmt.Errorf("%w: %v: %v", ErrJoin, peers, err)
	}
	c.savePeers()
	return n, nil
}

// joinLoop joins the configured and remembered peers, retrying until one
// answers, then pushes this node's state to them again until it knows a
// leader: a push/pull that reached a peer does not mean the peer took this
// node in (a node back on a new address is ignored until its old one is
// reclaimed; a broadcast of its new metadata can miss the leader), and
// otherwise only the periodic push/pull (15-30 s) would bring it in.
func (c *Cluster) joinLoop() {
	defer c.wg.Done()
	peers := slices.Clone(c.cfg.Join)
	for _, p := range c.loadPeers() {
		if !slices.Contains(peers, p) && p != c.GossipAddr() {
			peers = append(peers, p)
		}
	}
	if len(peers) == 0 {
		return
	}
	wait := 200 * time.Millisecond
	joined := false
	for attempt := 1; ; attempt++ {
		if joined && c.LeaderID() != "" {
			return
		}
		n, err := c.ml.Join(peers)
		switch {
		case n > 0 && !joined:
			c.log.Info("joined gossip", "peers", peers, "reached", n)
			c.savePeers()
			joined = true
		case n == 0 && (attempt == 1 || attempt%10 == 0):
			c.log.Warn("join: no peer answered yet; retrying", "peers", peers, "err", err)
		}
		select {
		case <-c.stop:
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

func (c *Cluster) peersPath() string { return filepath.Join(c.cfg.Dir, "peers.gossip.json") }

var savePeersMu sync.Mutex

// savePeers remembers the gossip addresses of live members, so a node
// restarted without --join finds its cluster again.
func (c *Cluster) savePeers() {
	if c.ml == nil {
		return
	}
	var addrs []string
	for _, m := range c.members.list() {
		if m.state == memberlist.StateAlive && m.id != c.cfg.NodeID {
			addrs = append(addrs, m.addr)
		}
	}
	if len(addrs) == 0 {
		return
	}
	sort.Strings(addrs)
	b, _ := json.Marshal(addrs)
	savePeersMu.Lock()
	defer savePeersMu.Unlock()
	if err := writeFileSync(c.peersPath(), b); err != nil {
		c.log.Debug("save peers", "err", err)
	}
}

func (c *Cluster) loadPeers() []string {
	b, err := os.ReadFile(c.peersPath())
	if err != nil {
		return nil
	}
	var addrs []string
	_ = json.Unmarshal(b, &addrs)
	return addrs
}

// Leave leaves the cluster gracefully: a leader hands leadership over,
// then the leader removes this node from Raft, then gossip announces the
// leave. Afterwards the node no longer takes part in the cluster.
func (c *Cluster) Leave(ctx context.Context) error {
	if c.ml == nil {
		return fmt.Errorf("%w: gossip is off", ErrConfig)
	}
	c.left.Store(true)
	if c.IsLeader() {
		if err := c.raft.LeadershipTransfer().Error(); err != nil {
			c.left.Store(false)
			return fmt.Errorf("cluster: leave: transfer leadership: %w", err)
		}
	}
	deadline := time.Now().Add(timeoutOf(ctx))
	for {
		leader := c.LeaderID()
		var err error
		switch {
		case leader == c.cfg.NodeID:
			// Elected again (a loaded node may be): hand over again.
			err = fmt.Errorf("%w: still the leader", ErrNotLeader)
			if terr := c.raft.LeadershipTransfer().Error(); terr != nil {
				err = fmt.Errorf("%w: still the leader: transfer leadership: %v", ErrNotLeader, terr)
			}
		case leader == "":
			err = fmt.Errorf("%w: no leader known", ErrNotLeader)
		default:
			err = c.peers.leave(ctx, c.httpURLOf(leader), c.cfg.NodeID)
		}
		if err == nil || errors.Is(err, ErrUnknownNode) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.left.Store(false)
			return fmt.Errorf("cluster: leave: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.ml.Leave(5 * time.Second); err != nil {
		return fmt.Errorf("cluster: leave gossip: %w", err)
	}
	_ = os.Remove(c.peersPath())
	c.log.Info("left the cluster")
	return nil
}

// RemoveNode removes a (dead) node from the cluster: from Raft through the
// leader, refusing to lose quorum.
func (c *Cluster) RemoveNode(ctx context.Context, id string) error {
	if id == c.cfg.NodeID {
		return fmt.Errorf("%w: a node does not remove itself: use leave", ErrConfig)
	}
	if c.IsLeader() {
		if err := c.removeServer(id); err != nil {
			return err
		}
	} else {
		leader := c.LeaderID()
		if leader == "" {
			return ErrNotLeader
		}
		if err := c.peers.leave(ctx, c.httpURLOf(leader), id); err != nil {
			return err
		}
	}
	c.members.forget(id)
	return nil
}

// LocalInfo describes this node.
func (c *Cluster) LocalInfo() *v1.NodeInfo {
	info := &v1.NodeInfo{
		Id:            c.cfg.NodeID,
		Site:          c.cfg.Site,
		HttpUrl:       c.cfg.HTTPURL,
		RaftAddr:      c.raftAdv,
		GossipAddr:    c.GossipAddr(),
		RaftState:     raftStateName(c.raft.State()),
		Status:        "alive",
		AppliedIndex:  c.AppliedIndex(),
		Version:       c.cfg.Version,
		Term:          c.raft.CurrentTerm(),
		CommitIndex:   c.raft.CommitIndex(),
		LeaderId:      c.LeaderID(),
		Ready:         c.Ready(),
		Halted:        c.fsm.halt.halted(),
		LastContactMs: -1,
	}
	if c.left.Load() {
		info.Status = "left"
	}
	if c.IsLeader() {
		info.LastContactMs = 0
	} else if lc := c.raft.LastContact(); !lc.IsZero() {
		info.LastContactMs = time.Since(lc).Milliseconds()
	}
	if cf := c.raft.GetConfiguration(); cf.Error() == nil {
		info.RaftState = "none"
		for _, s := range cf.Configuration().Servers {
			if string(s.ID) == c.cfg.NodeID {
				info.Voter = s.Suffrage == raft.Voter
				info.RaftState = raftStateName(c.raft.State())
				if !info.Voter {
					info.RaftState = "non-voter"
				}
			}
		}
	}
	return info
}

// Nodes lists every node the cluster knows of: Raft servers and gossip
// members, each with its own status where it answers.
func (c *Cluster) Nodes(ctx context.Context) ([]*v1.NodeInfo, error) {
	byID := map[string]*v1.NodeInfo{}
	self := c.LocalInfo()
	byID[self.Id] = self
	leader := c.LeaderID()
	if cf := c.raft.GetConfiguration(); cf.Error() == nil {
		for _, s := range cf.Configuration().Servers {
			id := string(s.ID)
			if id == self.Id {
				continue
			}
			n := &v1.NodeInfo{Id: id, RaftAddr: string(s.Address), Status: "dead", RaftState: "follower", Voter: s.Suffrage == raft.Voter, LastContactMs: -1}
			if s.Suffrage != raft.Voter {
				n.RaftState = "non-voter"
			}
			if id == leader {
				n.RaftState = "leader"
			}
			byID[id] = n
		}
	}
	for _, m := range c.members.list() {
		if m.id == self.Id {
			continue
		}
		n := byID[m.id]
		if n == nil {
			n = &v1.NodeInfo{Id: m.id, RaftState: "none", LastContactMs: -1}
			byID[m.id] = n
		}
		n.GossipAddr, n.Status = m.addr, stateName(m.state)
		if m.meta != nil {
			n.Site, n.HttpUrl, n.Version = m.meta.Site, m.meta.HttpUrl, m.meta.Version
			if n.RaftAddr == "" {
				n.RaftAddr = m.meta.RaftAddr
			}
		}
	}
	// Ask the live ones for their own figures, in parallel.
	var wg sync.WaitGroup
	for _, n := range byID {
		if n.Id == self.Id || n.HttpUrl == "" || (n.Status != "alive" && n.Status != "suspect") {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := c.peers.status(ctx, n.HttpUrl)
			if err != nil {
				return
			}
			n.AppliedIndex, n.LastContactMs, n.Term, n.CommitIndex = st.AppliedIndex, st.LastContactMs, st.Term, st.CommitIndex
			n.LeaderId, n.Ready, n.Halted = st.LeaderId, st.Ready, st.Halted
			if n.Version == "" {
				n.Version = st.Version
			}
		}()
	}
	wg.Wait()
	out := make([]*v1.NodeInfo, 0, len(byID))
	for _, n := range byID {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out, nil
}
