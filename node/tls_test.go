package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/cluster"
	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
	"github.com/condamesh/condamesh/internal/testcert"
	"github.com/condamesh/condamesh/internal/testlog"
	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
)

// TestTLSCluster: three nodes with a certificate, its key and the cluster
// CA form a cluster over TLS (Raft and node-to-node calls mutual TLS) and
// serve the API over HTTPS to clients without a client certificate. What
// is not the cluster's is refused: plain TCP and TLS without a verified
// client certificate on the Raft port, peer calls without one (even with
// the peer token), a node whose certificate another CA issued; none of it
// disturbs the cluster.
func TestTLSCluster(t *testing.T) {
	ca := testcert.NewCA(t, "cluster")
	files := ca.Issue(t, "node")
	c := nodetest.NewCluster(t, 3, nodetest.WithTLS(files))
	leader := c.Leader(t)
	f := c.Followers(t)[0]
	hc := f.HTTPClient(t)
	writes := 0
	followerWrite := func(t *testing.T) {
		t.Helper()
		writes++
		name := "tls" + string(rune('a'+writes))
		st, body := callWith(t, hc, f.URL(), nodetest.AdminKey, http.MethodPost, "/api/channels", "application/json", strings.NewReader(`{"name":"`+name+`","private":false}`))
		if st != http.StatusCreated {
			t.Fatalf("create %s on follower: %d %s", name, st, body)
		}
		if st, body := callWith(t, hc, f.URL(), nodetest.AdminKey, http.MethodGet, "/api/channels/"+name, "", nil); st != http.StatusOK {
			t.Fatalf("read back %s on follower: %d %s", name, st, body)
		}
	}
	stillWhole := func(t *testing.T) {
		t.Helper()
		followerWrite(t)
		c.WaitVoters(t, 3)
	}

	t.Run("follower write over https", func(t *testing.T) {
		followerWrite(t)
		nodes, err := leader.Cluster().Nodes(context.Background())
		if err != nil || len(nodes) != 3 {
			t.Fatalf("nodes: %v %v", nodes, err)
		}
		for _, n := range nodes {
			if !strings.HasPrefix(n.HttpUrl, "https://127.0.0.1:") {
				t.Errorf("node %s advertises %q, want https://", n.Id, n.HttpUrl)
			}
		}
	})

	t.Run("public API without a client certificate", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			hc    *http.Client
			proto int
		}{
			{"http/2", hc, 2},
			{"http/1.1", &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}, 1},
		} {
			resp, err := tc.hc.Get(leader.URL() + "/api/channels")
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != tc.proto || !strings.HasPrefix(string(b), "[") {
				t.Errorf("%s: %s %d: %.100s", tc.name, resp.Proto, resp.StatusCode, b)
			}
		}
		// Plain HTTP to the HTTPS listener is not served.
		if st, _ := call(t, "http://"+leader.Addrs().HTTP, "", http.MethodGet, "/health/ready", "", nil); st != http.StatusBadRequest {
			t.Errorf("plain http to the https listener: %d, want 400", st)
		}
	})

	t.Run("raft port refuses what is not a member", func(t *testing.T) {
		stranger := testcert.NewCA(t, "other").Issue(t, "stranger").Certificate(t)
		member := files.Certificate(t)
		for _, tc := range []struct {
			name string
			tls  *tls.Config // nil: plain TCP
			ok   bool
		}{
			{"plain tcp", nil, false},
			{"tls without a client certificate", &tls.Config{RootCAs: ca.Pool, NextProtos: []string{"condamesh-raft"}}, false},
			{"tls with another CA's certificate", &tls.Config{RootCAs: ca.Pool, NextProtos: []string{"condamesh-raft"}, Certificates: []tls.Certificate{stranger}}, false},
			{"tls of another protocol", &tls.Config{RootCAs: ca.Pool, NextProtos: []string{"h2"}, Certificates: []tls.Certificate{member}}, false},
			{"a member", &tls.Config{RootCAs: ca.Pool, NextProtos: []string{"condamesh-raft"}, Certificates: []tls.Certificate{member}}, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := raftProbe(leader.Addrs().Raft, tc.tls)
				if tc.ok != (err == nil) {
					t.Fatalf("probe: %v, want accepted %v", err, tc.ok)
				}
			})
		}
		stillWhole(t)
	})

	t.Run("peer calls need a client certificate", func(t *testing.T) {
		token := cluster.PeerToken(leader.KeySecret())
		member := files.Certificate(t)
		stranger := testcert.NewCA(t, "other").Issue(t, "stranger").Certificate(t)
		client := func(certs ...tls.Certificate) *http.Client {
			return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, Certificates: certs}, ForceAttemptHTTP2: true}}
		}
		// A client offers only a certificate of a CA the server names:
		// this one offers its own anyway.
		forced := func(cert tls.Certificate) *http.Client {
			get := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
			return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, GetClientCertificate: get}, ForceAttemptHTTP2: true}}
		}
		for _, tc := range []struct {
			name    string
			hc      *http.Client
			token   string
			want    int // 0: refused in the handshake
			wantMsg string
		}{
			{"token, no certificate", client(), token, http.StatusUnauthorized, "client certificate"},
			{"certificate, no token", client(member), "", http.StatusUnauthorized, "not a cluster member"},
			{"token, another CA's certificate (not offered)", client(stranger), token, http.StatusUnauthorized, "client certificate"},
			{"token, another CA's certificate offered", forced(stranger), token, 0, ""},
			{"token and certificate", client(member), token, http.StatusOK, `"id"`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req, _ := http.NewRequest(http.MethodPost, leader.URL()+condameshv1connect.PeerServiceStatusProcedure, strings.NewReader("{}"))
				req.Header.Set("Content-Type", "application/json")
				if tc.token != "" {
					req.Header.Set(cluster.PeerHeader, tc.token)
				}
				resp, err := tc.hc.Do(req)
				if tc.want == 0 {
					if err == nil {
						resp.Body.Close()
						t.Fatalf("answered %d, want a refused handshake", resp.StatusCode)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.want || !strings.Contains(string(b), tc.wantMsg) {
					t.Fatalf("%d %s, want %d with %q", resp.StatusCode, b, tc.want, tc.wantMsg)
				}
			})
		}
	})

	t.Run("a node with another CA's certificate cannot join", func(t *testing.T) {
		other := testcert.NewCA(t, "other")
		cfg := node.DefaultLocalConfig(t.TempDir())
		nodetest.WithTLS(other.Issue(t, "stranger"))(&cfg)
		cfg.Join = []string{leader.Addrs().Gossip}
		cfg.API.KeySecret = leader.KeySecret()
		cfg.Logger = testlog.New(t, slog.LevelError)
		n, err := node.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		defer func() { cancel(); <-done }()
		wctx, wcancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer wcancel()
		if err := n.WaitReady(wctx); err == nil {
			t.Fatal("a node with another CA's certificate became ready")
		}
		// The leader never put it in the Raft configuration: it does not
		// answer as a peer with a certificate the CA verifies.
		nodes, err := leader.Cluster().Nodes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range nodes {
			if x.Id == n.ID() && x.RaftState != "none" {
				t.Fatalf("the stranger is in the Raft configuration as %s", x.RaftState)
			}
		}
		stillWhole(t)
	})
}

// raftProbe opens a connection to a Raft port as cfg says (nil: plain
// TCP), sends what a plain Raft listener reads as a request, and reports
// whether the node took it: nil when the handshake passed and the node
// answered or kept the connection open for a moment; the error when it
// refused the handshake or closed the connection.
func raftProbe(addr string, cfg *tls.Config) error {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer raw.Close()
	conn := raw
	if cfg != nil {
		cfg = cfg.Clone()
		cfg.ServerName = "127.0.0.1"
		tc := tls.Client(raw, cfg)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			return err
		}
		conn = tc
	}
	// A Raft request type byte and some bytes after it: a plain Raft
	// listener would read them as a request.
	_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := conn.Write([]byte{0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}); err != nil {
		return err
	}
	var b [64]byte
	n, err := conn.Read(b[:])
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil // kept: waiting for the rest of the request
	case cfg == nil && n > 0 && b[0] == 0x15:
		return errors.New("answered with a TLS alert")
	case n > 0:
		return nil // answered
	}
	return err
}

// TestTLSConfigErrors: a node refuses to start with TLS files that cannot
// work, naming the file at fault.
func TestTLSConfigErrors(t *testing.T) {
	ca := testcert.NewCA(t, "cluster")
	good := ca.Issue(t, "node")
	other := ca.Issue(t, "other")
	serverOnly := ca.Issue(t, "server-only", x509.ExtKeyUsageServerAuth)
	foreign := testcert.NewCA(t, "foreign").Issue(t, "foreign")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		cert, key, ca string
		advertise     string
		want          string
	}{
		{"cert without key", good.Cert, "", "", "", "go together"},
		{"key without cert", "", good.Key, "", "", "go together"},
		{"ca without cert", "", "", good.CA, "", "needs a tls cert"},
		{"missing cert file", good.Cert + ".missing", good.Key, good.CA, "", "node.pem.missing"},
		{"key of another certificate", good.Cert, other.Key, good.CA, "", "private key does not match"},
		{"ca file without a certificate", good.Cert, good.Key, garbage, "", "no PEM certificate"},
		{"certificate of another CA", foreign.Cert, foreign.Key, good.CA, "", "is not verified by tls ca"},
		{"no clientAuth usage", serverOnly.Cert, serverOnly.Key, serverOnly.CA, "", "clientAuth"},
		{"http advertised", good.Cert, good.Key, good.CA, "http://127.0.0.1:1", "want https://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := node.DefaultLocalConfig(t.TempDir())
			cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile, cfg.AdvertiseHTTP = tc.cert, tc.key, tc.ca, tc.advertise
			cfg.Logger = testlog.New(t, slog.LevelError)
			n, err := node.New(context.Background(), cfg)
			if err == nil {
				n.Close(context.Background())
				t.Fatalf("started, want an error with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
}
