package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
)

// Cluster is the node's cluster membership as the API uses it.
type Cluster interface {
	Nodes(ctx context.Context) ([]*v1.NodeInfo, error)
	Status(ctx context.Context) *v1.NodeInfo
	Join(ctx context.Context, peers []string) (int, error)
	Leave(ctx context.Context) error
	RemoveNode(ctx context.Context, id string) error
	// ReadIndex waits until a linearizable read may be served locally.
	ReadIndex(ctx context.Context) error
	// IsLeader reports whether this node leads (its state is current).
	IsLeader() bool
}

// ConsistentHeader asks a Connect call for a linearizable read (REST:
// ?consistent=true).
const ConsistentHeader = "Condamesh-Consistent"

// consistentRead reports whether a request asks for a linearizable read.
func consistentRead(r *http.Request) bool {
	if v := r.Header.Get(ConsistentHeader); v != "" {
		return v == "true" || v == "1"
	}
	if !strings.Contains(r.URL.RawQuery, "consistent") {
		return false
	}
	v := r.URL.Query().Get("consistent")
	return v == "true" || v == "1"
}

// waitsReadIndex reports whether r is served only once this node has
// applied everything committed when it arrived (the read index): a read
// asking for it (consistentRead) and every write. A write's handler reads
// the catalog before it proposes (does the channel exist, may the caller
// change it, the record a PATCH changes); on a node that trails the
// leader those reads would answer 404 or 409 for a write that another
// node acknowledged already, which no order of the two explains. The
// cluster membership calls are left out (a node joins before it has a
// leader), and so are the node-to-node mounts.
func (s *Server) waitsReadIndex(r *http.Request) bool {
	if consistentRead(r) {
		return true
	}
	if safeMethod(r.Method) || s.mounted(r) {
		return false
	}
	p := r.URL.Path
	if strings.HasPrefix(p, "/api/cluster/") || strings.HasPrefix(p, "/"+condameshv1connect.ClusterServiceName+"/") || connectReads[p] {
		return false
	}
	return true
}

// connectReads are the Connect procedures that only read: local unless
// asked for a consistent read, as REST GETs are. Every other procedure is
// a write.
var connectReads = map[string]bool{
	condameshv1connect.ChannelServiceGetChannelProcedure:   true,
	condameshv1connect.ChannelServiceListChannelsProcedure: true,
	condameshv1connect.PackageServiceListPackagesProcedure: true,
	condameshv1connect.PackageServiceListVersionsProcedure: true,
	condameshv1connect.KeyServiceListKeysProcedure:         true,
}

// The cluster operations, shared by REST and Connect: server owners only.

func (s *Server) clusterOp(id *identity) error {
	if s.cluster == nil {
		return apiErr(ErrNotFound, "clustering is off on this node")
	}
	if id.anonymous() {
		return errNotLoggedIn
	}
	if id.user.GetRole() != "owner" {
		return errNoPermission
	}
	return nil
}

func (s *Server) clusterNodes(ctx context.Context, id *identity) ([]*v1.NodeInfo, error) {
	if err := s.clusterOp(id); err != nil {
		return nil, err
	}
	return s.cluster.Nodes(ctx)
}

func (s *Server) clusterStatus(ctx context.Context, id *identity) (*v1.NodeInfo, error) {
	if err := s.clusterOp(id); err != nil {
		return nil, err
	}
	return s.cluster.Status(ctx), nil
}

// maxJoinPeers bounds one join request.
const maxJoinPeers = 64

func (s *Server) clusterJoin(ctx context.Context, id *identity, peers []string) (int, error) {
	if err := s.clusterOp(id); err != nil {
		return 0, err
	}
	if len(peers) == 0 || len(peers) > maxJoinPeers {
		return 0, apiErr(ErrInvalid, "peers: give 1 to %d gossip addresses host:port", maxJoinPeers)
	}
	for _, p := range peers {
		if len(p) > 256 || !strings.Contains(p, ":") {
			return 0, apiErr(ErrInvalid, "peer %q: want a gossip address host:port", p)
		}
	}
	return s.cluster.Join(ctx, peers)
}

func (s *Server) clusterLeave(ctx context.Context, id *identity) error {
	if err := s.clusterOp(id); err != nil {
		return err
	}
	return s.cluster.Leave(ctx)
}

func (s *Server) clusterRemove(ctx context.Context, id *identity, node string) error {
	if err := s.clusterOp(id); err != nil {
		return err
	}
	if node == "" {
		return apiErr(ErrInvalid, "node id is required")
	}
	return s.cluster.RemoveNode(ctx, node)
}

// NodeJSON is a node as REST (and `condamesh node list -o json`) shows it.
func NodeJSON(n *v1.NodeInfo) map[string]any {
	return map[string]any{
		"id": n.Id, "site": n.Site, "http_url": n.HttpUrl, "raft_addr": n.RaftAddr, "gossip_addr": n.GossipAddr,
		"raft_state": n.RaftState, "status": n.Status, "applied_index": n.AppliedIndex, "commit_index": n.CommitIndex,
		"term": n.Term, "version": n.Version, "voter": n.Voter, "last_contact_ms": n.LastContactMs,
		"leader_id": n.LeaderId, "ready": n.Ready, "halted": n.Halted,
	}
}

func (s *Server) restClusterNodes(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		nodes, err := s.clusterNodes(r.Context(), id)
		if err != nil {
			return 0, nil, err
		}
		out := make([]map[string]any, len(nodes))
		for i, n := range nodes {
			out[i] = NodeJSON(n)
		}
		return http.StatusOK, out, nil
	})
}

func (s *Server) restClusterStatus(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		n, err := s.clusterStatus(r.Context(), id)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, NodeJSON(n), nil
	})
}

func (s *Server) restClusterJoin(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		if err := s.clusterOp(id); err != nil {
			return 0, nil, err
		}
		fields, err := decodeBody(r)
		if err != nil {
			return 0, nil, err
		}
		var peers []string
		if raw := fields["peers"]; !isNull(raw) && json.Unmarshal(raw, &peers) != nil {
			return 0, nil, apiErr(ErrInvalid, "peers: want a list of gossip addresses host:port")
		}
		n, err := s.clusterJoin(r.Context(), id, peers)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]any{"joined": n}, nil
	})
}

func (s *Server) restClusterLeave(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		if err := s.clusterLeave(r.Context(), id); err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]any{"left": true}, nil
	})
}

func (s *Server) restClusterRemove(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		if err := s.clusterRemove(r.Context(), id, r.PathValue("id")); err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]any{"removed": r.PathValue("id")}, nil
	})
}

func (r rpc) ListNodes(ctx context.Context, _ *v1.ListNodesRequest) (*v1.ListNodesResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	nodes, err := r.s.clusterNodes(ctx, id)
	if err != nil {
		return nil, connectError(err)
	}
	return &v1.ListNodesResponse{Nodes: nodes}, nil
}

func (r rpc) GetStatus(ctx context.Context, _ *v1.GetStatusRequest) (*v1.NodeInfo, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	n, err := r.s.clusterStatus(ctx, id)
	return n, connectError(err)
}

func (r rpc) Join(ctx context.Context, req *v1.JoinRequest) (*v1.JoinResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	n, err := r.s.clusterJoin(ctx, id, req.GetPeers())
	if err != nil {
		return nil, connectError(err)
	}
	return &v1.JoinResponse{Joined: int32(n)}, nil
}

func (r rpc) Leave(ctx context.Context, _ *v1.LeaveRequest) (*v1.LeaveResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.s.clusterLeave(ctx, id); err != nil {
		return nil, connectError(err)
	}
	return &v1.LeaveResponse{}, nil
}

func (r rpc) RemoveNode(ctx context.Context, req *v1.RemoveNodeRequest) (*v1.RemoveNodeResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.s.clusterRemove(ctx, id, req.GetId()); err != nil {
		return nil, connectError(err)
	}
	return &v1.RemoveNodeResponse{}, nil
}
