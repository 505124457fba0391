package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
	"github.com/hashicorp/raft"
)

// MaxForward bounds one forwarded command (a peer's request body), the
// same bound Raft entries have in practice: a mirror batch stays far below.
const MaxForward = 64 << 20

// PeerHeader carries a node-to-node call's token (PeerToken).
const PeerHeader = "Condamesh-Peer-Token"

// PeerToken derives the node-to-node token from the shared secret (every
// member has the secret; nobody else does).
func PeerToken(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("condamesh peer token v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// Fingerprint names a secret without revealing it (gossiped, so that nodes
// with different API key secrets refuse each other).
func Fingerprint(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("condamesh secret fingerprint v1"))
	return hex.EncodeToString(m.Sum(nil))[:16]
}

// PeerHandler returns the path and handler of PeerService, which the node
// mounts on its HTTP listener. Callers without the peer token, and with
// mutual TLS (Config.TLS with ClientCAs) callers without a verified client
// certificate, are refused before their request is read.
func (c *Cluster) PeerHandler() (string, http.Handler) {
	path, h := condameshv1connect.NewPeerServiceHandler(peerServer{c}, connect.WithReadMaxBytes(MaxForward), connect.WithSendMaxBytes(MaxForward))
	want := []byte(PeerToken(c.cfg.PeerSecret))
	mutual := c.mutualTLS()
	return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.cfg.Partition.IsCut() {
			http.Error(w, errPartitioned.Error(), http.StatusServiceUnavailable)
			return
		}
		if mutual && !verifiedPeer(r) {
			http.Error(w, ErrNotMember.Error()+": no client certificate from the cluster CA", http.StatusUnauthorized)
			return
		}
		if got := r.Header.Get(PeerHeader); subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			http.Error(w, ErrNotMember.Error(), http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

type peerServer struct{ c *Cluster }

func (p peerServer) Forward(ctx context.Context, req *v1.ForwardRequest) (*v1.ForwardResponse, error) {
	c := p.c
	if _, err := DecodeCommand(req.GetCommand()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if !c.IsLeader() {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("not the leader"))
	}
	f := c.raft.Apply(req.GetCommand(), timeoutOf(ctx))
	if err := f.Error(); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	res, _ := f.Response().(applyResult)
	c.nudgeCommit() // the forwarding follower waits to apply f.Index() itself
	return &v1.ForwardResponse{Index: f.Index(), Result: c.fsm.sm.EncodeResult(res.val, res.err)}, nil
}

func (p peerServer) ReadIndex(ctx context.Context, req *v1.ReadIndexRequest) (*v1.ReadIndexResponse, error) {
	if !p.c.IsLeader() {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("not the leader"))
	}
	idx, err := p.c.leaderReadIndex()
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return &v1.ReadIndexResponse{Index: idx}, nil
}

func (p peerServer) Status(ctx context.Context, req *v1.PeerStatusRequest) (*v1.NodeInfo, error) {
	return p.c.LocalInfo(), nil
}

func (p peerServer) Leave(ctx context.Context, req *v1.PeerLeaveRequest) (*v1.PeerLeaveResponse, error) {
	if !p.c.IsLeader() {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("not the leader"))
	}
	if err := p.c.removeServer(req.GetId()); err != nil {
		code := connect.CodeUnavailable
		switch {
		case errors.Is(err, ErrUnknownNode):
			code = connect.CodeNotFound
		case errors.Is(err, ErrNoQuorum):
			code = connect.CodeFailedPrecondition
		}
		return nil, connect.NewError(code, err)
	}
	return &v1.PeerLeaveResponse{}, nil
}

// peerClients caches one PeerService client per peer URL.
type peerClients struct {
	hc    *http.Client
	token string
	mu    sync.Mutex
	m     map[string]condameshv1connect.PeerServiceClient
}

func newPeerClients(hc *http.Client, token string) *peerClients {
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	wrapped := *hc
	wrapped.Transport = tokenTransport{token: token, next: next}
	return &peerClients{hc: &wrapped, token: token, m: map[string]condameshv1connect.PeerServiceClient{}}
}

func (p *peerClients) client(url string) condameshv1connect.PeerServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	cl, ok := p.m[url]
	if !ok {
		cl = condameshv1connect.NewPeerServiceClient(p.hc, strings.TrimSuffix(url, "/"), connect.WithReadMaxBytes(MaxForward), connect.WithSendMaxBytes(MaxForward))
		p.m[url] = cl
	}
	return cl
}

// tokenTransport adds the peer token to every node-to-node request.
type tokenTransport struct {
	token string
	next  http.RoundTripper
}

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(PeerHeader, t.token)
	return t.next.RoundTrip(r)
}

func (p *peerClients) forward(ctx context.Context, url string, data []byte) (*v1.ForwardResponse, error) {
	resp, err := p.client(url).Forward(ctx, &v1.ForwardRequest{Command: data})
	if err != nil {
		return nil, fmt.Errorf("cluster: forward to %s: %w", url, err)
	}
	return resp, nil
}

func (p *peerClients) readIndex(ctx context.Context, url string) (uint64, error) {
	resp, err := p.client(url).ReadIndex(ctx, &v1.ReadIndexRequest{})
	if err != nil {
		return 0, fmt.Errorf("cluster: read index from %s: %w", url, err)
	}
	return resp.GetIndex(), nil
}

func (p *peerClients) status(ctx context.Context, url string) (*v1.NodeInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := p.client(url).Status(ctx, &v1.PeerStatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("cluster: status of %s: %w", url, err)
	}
	return resp, nil
}

func (p *peerClients) leave(ctx context.Context, url, id string) error {
	_, err := p.client(url).Leave(ctx, &v1.PeerLeaveRequest{Id: id})
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return fmt.Errorf("%w: %s", ErrUnknownNode, id)
	case connect.CodeFailedPrecondition:
		return fmt.Errorf("%w: %s", ErrNoQuorum, connectMessage(err))
	}
	if err != nil {
		return fmt.Errorf("cluster: leave through %s: %w", url, err)
	}
	return nil
}

// isFinal reports a peer error that retrying cannot fix (the command or
// the credentials are refused).
func isFinal(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeResourceExhausted:
		return true
	}
	return false
}

// raftStateName is a server's Raft role as the API shows it.
func raftStateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Candidate:
		return "candidate"
	case raft.Follower:
		return "follower"
	default:
		return "none"
	}
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}
