package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/condamesh/condamesh/api"
	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda/condatest"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
	"google.golang.org/protobuf/proto"
)

// The cluster scenarios of issue 10: real nodes on loopback through the
// same wiring as `serve` (nodetest.NewCluster), one scenario per test.

// restNode is one element of GET /api/cluster/nodes.
type restNode struct {
	ID           string `json:"id"`
	Site         string `json:"site"`
	HTTPURL      string `json:"http_url"`
	RaftAddr     string `json:"raft_addr"`
	GossipAddr   string `json:"gossip_addr"`
	RaftState    string `json:"raft_state"`
	Status       string `json:"status"`
	AppliedIndex uint64 `json:"applied_index"`
	Version      string `json:"version"`
}

// restNodes asks base for GET /api/cluster/nodes as the admin.
func restNodes(t *testing.T, base string) []restNode {
	t.Helper()
	st, b := call(t, base, nodetest.AdminKey, http.MethodGet, "/api/cluster/nodes", "", nil)
	if st != http.StatusOK {
		t.Fatalf("GET /api/cluster/nodes on %s: %d %s", base, st, b)
	}
	// Every field the issue names is present in every object.
	var raw []map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("nodes: %v: %s", err, b)
	}
	for _, o := range raw {
		for _, k := range []string{"id", "site", "http_url", "raft_addr", "gossip_addr", "raft_state", "status", "applied_index", "version"} {
			if _, ok := o[k]; !ok {
				t.Fatalf("node object lacks %q: %v", k, o)
			}
		}
	}
	var out []restNode
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("nodes: %v: %s", err, b)
	}
	return out
}

// raftStates counts the nodes of a cluster's view by raft_state.
func raftStates(nodes []restNode) map[string]int {
	m := map[string]int{}
	for _, n := range nodes {
		m[n.RaftState]++
	}
	return m
}

// eventually is nodetest.Eventually.
var eventually = nodetest.Eventually

// TestClusterJoinFiveVotersTwoNonVoters: seven nodes with Voters=5 give
// five voters (one leader, four followers) and two non-voters, in the
// cluster's Raft view and in GET /api/cluster/nodes on any node.
func TestClusterJoinFiveVotersTwoNonVoters(t *testing.T) {
	c := nodetest.NewCluster(t, 7, nodetest.WithVoters(5), nodetest.WithSite("eu"))
	c.WaitApplied(t)
	leader := c.Leader(t)
	want := map[string]int{"leader": 1, "follower": 4, "non-voter": 2}
	nodes, err := leader.Cluster().Nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, n := range nodes {
		if n.Voter {
			voters++
		}
	}
	if voters != 5 || len(nodes) != 7 {
		t.Fatalf("leader's view: %d nodes, %d voters; want 7 and 5", len(nodes), voters)
	}
	byID := map[string]*nodetest.Node{}
	for _, n := range c.Nodes {
		byID[n.ID()] = n
	}
	for _, asked := range []*nodetest.Node{leader, c.Followers(t)[0], c.Nodes[6]} {
		var got []restNode
		eventually(t, 10*time.Second, "5 voters and 2 non-voters in "+asked.ID()+"'s view", func() bool {
			got = restNodes(t, asked.URL())
			s := raftStates(got)
			return len(got) == 7 && s["leader"] == want["leader"] && s["follower"] == want["follower"] && s["non-voter"] == want["non-voter"]
		})
		for _, n := range got {
			tn := byID[n.ID]
			if tn == nil {
				t.Fatalf("unknown node %s in %s's view", n.ID, asked.ID())
			}
			a := tn.Addrs()
			if n.Site != "eu" || n.HTTPURL != tn.URL() || n.RaftAddr != a.Raft || n.GossipAddr != a.Gossip || n.Status != "alive" || n.AppliedIndex == 0 {
				t.Fatalf("%s's view of %s: %+v (addrs %+v, url %s)", asked.ID(), n.ID, n, a, tn.URL())
			}
			if got := tn.Cluster().LocalInfo().RaftState; got != n.RaftState {
				t.Fatalf("%s says it is %s, %s's view says %s", n.ID, got, asked.ID(), n.RaftState)
			}
		}
	}
}

// TestClusterHealth: /health/ready answers 200 on a follower that has a
// leader and is caught up, 503 on a node that has no leader; /health/live
// answers 200 while the process runs, leader or not.
func TestClusterHealth(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	c.WaitApplied(t)
	for _, n := range c.Nodes {
		for _, p := range []string{"/health/ready", "/health/live"} {
			if st, b := call(t, n.URL(), "", http.MethodGet, p, "", nil); st != http.StatusOK {
				t.Fatalf("%s on %s: %d %s", p, n.ID(), st, b)
			}
		}
	}
	// Crash two of three: the survivor has no quorum, so no leader.
	f := c.Followers(t)[0]
	for _, n := range c.Nodes {
		if n != f {
			n.Crash()
		}
	}
	eventually(t, 10*time.Second, "503 from /health/ready without a leader", func() bool {
		st, _ := call(t, f.URL(), "", http.MethodGet, "/health/ready", "", nil)
		return st == http.StatusServiceUnavailable
	})
	if st, b := call(t, f.URL(), "", http.MethodGet, "/health/live", "", nil); st != http.StatusOK {
		t.Fatalf("/health/live without a leader: %d %s", st, b)
	}
}

// TestClusterOtherClusterRefused: a node of another cluster is refused at
// the gossip merge in both directions, with 409 and a message naming the
// cause, and neither cluster's membership changes.
func TestClusterOtherClusterRefused(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	for _, tc := range []struct {
		name    string
		secret  bool // the other cluster has the same API key secret
		message string
	}{
		{"same secret", true, "belongs to cluster"},
		{"other secret", false, "belongs to cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []nodetest.Option
			if tc.secret {
				secret := c.Nodes[0].KeySecret()
				opts = append(opts, func(cfg *node.Config) { cfg.API.KeySecret = secret })
			}
			other := nodetest.Start(t, opts...)
			for _, tc2 := range []struct {
				name     string
				asked    *nodetest.Node
				peerAddr string
			}{
				{"single node joins the cluster", other, c.Nodes[1].Addrs().Gossip},
				{"cluster member joins the single node", c.Nodes[1], other.Addrs().Gossip},
			} {
				st, b := call(t, tc2.asked.URL(), nodetest.AdminKey, http.MethodPost, "/api/cluster/join", "application/json",
					strings.NewReader(`{"peers":["`+tc2.peerAddr+`"]}`))
				if st != http.StatusConflict || !strings.Contains(string(b), tc.message) {
					t.Fatalf("%s: %d %s; want 409 naming %q", tc2.name, st, b, tc.message)
				}
			}
			// Neither membership changes: 3 and 1 nodes, in Raft and gossip,
			// over a few gossip rounds.
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				if got := restNodes(t, c.Nodes[0].URL()); len(got) != 3 {
					t.Fatalf("the cluster lists %d nodes: %+v", len(got), got)
				}
				if got := restNodes(t, other.URL()); len(got) != 1 {
					t.Fatalf("the single node lists %d nodes: %+v", len(got), got)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// TestClusterFollowerWrites: every REST write route and the Connect
// writes, sent to a follower, succeed with the leader's status and are
// seen by a read on the same follower as soon as they return
// (read-your-writes); a failing write answers the same status on the
// leader and on the follower.
func TestClusterFollowerWrites(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	leader, f := c.Leader(t), c.Followers(t)[0]
	fm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"name": "their-mirror", "mirror_channel_url": "http://primary/get/fw"})
	}))
	defer fm.Close()
	const admin = nodetest.AdminKey
	jsonBody := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// write sends one write to the follower and, at once, a GET of
	// readPath there (as readKey, default the admin) that must answer
	// readStatus with a body holding each of has ("!x": not holding x).
	type read struct {
		key, path string
		status    int
		has       []string
	}
	write := func(name, key, method, path, ctype string, body []byte, want int, rd read) []byte {
		t.Helper()
		st, b := call(t, f.URL(), key, method, path, ctype, bytes.NewReader(body))
		if st != want {
			t.Fatalf("%s on the follower: %d %s; want %d", name, st, b, want)
		}
		if rd.key == "" {
			rd.key = admin
		}
		rst, rb := call(t, f.URL(), rd.key, http.MethodGet, rd.path, "", nil)
		if rst != rd.status {
			t.Fatalf("%s: read %s on the follower: %d %s; want %d", name, rd.path, rst, rb, rd.status)
		}
		for _, h := range rd.has {
			if lack, ok := strings.CutPrefix(h, "!"); ok {
				if strings.Contains(string(rb), lack) {
					t.Fatalf("%s: read %s on the follower still holds %q: %s", name, rd.path, lack, rb)
				}
			} else if !strings.Contains(string(rb), h) {
				t.Fatalf("%s: read %s on the follower lacks %q: %s", name, rd.path, h, rb)
			}
		}
		return b
	}
	// same sends a failing write to the leader and to the follower: both
	// answer want.
	same := func(name, key, method, path, ctype string, body []byte, want int) {
		t.Helper()
		for _, n := range []*nodetest.Node{leader, f} {
			if st, b := call(t, n.URL(), key, method, path, ctype, bytes.NewReader(body)); st != want {
				t.Fatalf("%s on %s: %d %s; want %d", name, n.ID(), st, b, want)
			}
		}
	}
	multipartFiles := func(files map[string][]byte) ([]byte, string) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		for name, data := range files {
			w, err := mw.CreateFormFile("files", name)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = w.Write(data)
		}
		if err := mw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes(), mw.FormDataContentType()
	}
	const js = "application/json"

	// Channels.
	write("create channel", admin, "POST", "/api/channels", js, []byte(`{"name":"fw","private":false}`), 201,
		read{path: "/api/channels/fw", status: 200, has: []string{`"name":"fw"`}})
	same("duplicate channel", admin, "POST", "/api/channels", js, []byte(`{"name":"fw","private":false}`), 409)
	write("patch channel", admin, "PATCH", "/api/channels/fw", js, []byte(`{"private":true}`), 200,
		read{path: "/api/channels/fw", status: 200, has: []string{`"private":true`}})
	same("patch unknown channel", admin, "PATCH", "/api/channels/nope", js, []byte(`{"private":true}`), 404)

	// Users (a member to be refused, and to become a channel member).
	ub := write("create user", admin, "POST", "/api/users", js, []byte(`{"username":"bob","role":"member"}`), 201,
		read{path: "/api/users/bob", status: 200, has: []string{`"bob"`}})
	var bob struct {
		Key string `json:"api_key"`
	}
	if err := json.Unmarshal(ub, &bob); err != nil || bob.Key == "" {
		t.Fatalf("created user: %s", ub)
	}
	if st, b := call(t, f.URL(), bob.Key, "GET", "/api/me", "", nil); st != 200 {
		t.Fatalf("the new user's key on the follower: %d %s", st, b)
	}
	same("duplicate user", admin, "POST", "/api/users", js, []byte(`{"username":"bob","role":"member"}`), 409)
	write("set user role", admin, "PUT", "/api/users/bob/role", js, []byte(`{"role":"maintainer"}`), 200,
		read{path: "/api/users/bob/role", status: 200, has: []string{`"maintainer"`}})
	same("role of unknown user", admin, "PUT", "/api/users/nobody/role", js, []byte(`{"role":"member"}`), 404)
	write("set user role back", admin, "PUT", "/api/users/bob/role", js, []byte(`{"role":"member"}`), 200,
		read{path: "/api/users/bob/role", status: 200, has: []string{`"member"`}})
	same("forbidden patch", bob.Key, "PATCH", "/api/channels/fw", js, []byte(`{"private":false}`), 403)

	// Packages and uploads: multipart, multipart to a package, raw.
	write("create package", admin, "POST", "/api/channels/fw/packages", js, []byte(`{"name":"empty"}`), 201,
		read{path: "/api/channels/fw/packages/empty", status: 200, has: []string{`"empty"`}})
	same("duplicate package", admin, "POST", "/api/channels/fw/packages", js, []byte(`{"name":"empty"}`), 409)
	spec := func(name, version string) (string, []byte) {
		s := condatest.Spec{Name: name, Version: version, Build: "0", Files: map[string]string{"share/" + name: version}}
		return condatest.Filename(s, ".tar.bz2"), condatest.TarBz2(t, s)
	}
	f1, d1 := spec("alpha", "1.0")
	body, ctype := multipartFiles(map[string][]byte{f1: d1})
	write("upload multipart", admin, "POST", "/api/channels/fw/files/", ctype, body, 201,
		read{path: "/api/channels/fw/packages/alpha/versions", status: 200, has: []string{f1}})
	if st, b := call(t, f.URL(), admin, "GET", "/get/fw/noarch/"+f1, "", nil); st != 200 || !bytes.Equal(b, d1) {
		t.Fatalf("the follower serves the file uploaded to it: %d (%d bytes)", st, len(b))
	}
	same("duplicate upload", admin, "POST", "/api/channels/fw/files/", ctype, body, 409)
	f2, d2 := spec("alpha", "2.0")
	body, ctype = multipartFiles(map[string][]byte{f2: d2})
	write("upload multipart to a package", admin, "POST", "/api/channels/fw/packages/alpha/files/", ctype, body, 201,
		read{path: "/api/channels/fw/packages/alpha/versions", status: 200, has: []string{f1, f2}})
	f3, d3 := spec("beta", "1.0")
	write("upload raw", admin, "POST", "/api/channels/fw/upload/"+f3+"?sha256="+sha(d3), "application/octet-stream", d3, 201,
		read{path: "/api/channels/fw/packages/beta/versions", status: 200, has: []string{f3}})
	same("duplicate raw upload", admin, "POST", "/api/channels/fw/upload/"+f3+"?sha256="+sha(d3), "application/octet-stream", d3, 409)
	write("delete package file", admin, "DELETE", "/api/channels/fw/packages/alpha/versions/noarch/"+f1, "", nil, 200,
		read{path: "/api/channels/fw/packages/alpha/versions", status: 200, has: []string{"!" + f1, f2}})
	same("delete unknown package file", admin, "DELETE", "/api/channels/fw/packages/alpha/versions/noarch/"+f1, "", nil, 404)
	write("delete package", admin, "DELETE", "/api/channels/fw/packages/beta", "", nil, 200,
		read{path: "/api/channels/fw/packages/beta", status: 404})
	same("delete unknown package", admin, "DELETE", "/api/channels/fw/packages/beta", "", nil, 404)

	// Members.
	write("add channel member", admin, "POST", "/api/channels/fw/members", js, []byte(`{"username":"bob","role":"member"}`), 201,
		read{path: "/api/channels/fw/members", status: 200, has: []string{`"bob"`}})
	same("add unknown user as member", admin, "POST", "/api/channels/fw/members", js, []byte(`{"username":"nobody","role":"member"}`), 404)
	write("add package member", admin, "POST", "/api/channels/fw/packages/alpha/members", js, []byte(`{"username":"bob","role":"maintainer"}`), 201,
		read{path: "/api/channels/fw/packages/alpha/members", status: 200, has: []string{`"bob"`}})
	write("remove channel member", admin, "DELETE", "/api/channels/fw/members?username=bob", "", nil, 200,
		read{path: "/api/channels/fw/members", status: 200, has: []string{"!" + `"bob"`}})
	same("remove a non-member", admin, "DELETE", "/api/channels/fw/members?username=bob", "", nil, 404)

	// API keys.
	kb := write("create api key", admin, "POST", "/api/api-keys", js, []byte(`{"description":"follower key"}`), 201,
		read{path: "/api/api-keys", status: 200, has: []string{"follower key"}})
	var key struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(kb, &key); err != nil || key.Key == "" {
		t.Fatalf("created key: %s", kb)
	}
	write("delete api key", admin, "DELETE", "/api/api-keys/"+key.Key, "", nil, 200,
		read{key: key.Key, path: "/api/me", status: 401})
	same("delete unknown api key", admin, "DELETE", "/api/api-keys/"+key.Key, "", nil, 404)

	// Mirrors.
	murl := fm.URL + "/get/their-mirror"
	write("add mirror", admin, "POST", "/api/channels/fw/mirrors", js, jsonBody(map[string]any{"url": murl}), 201,
		read{path: "/api/channels/fw/mirrors", status: 200, has: []string{murl}})
	same("duplicate mirror", admin, "POST", "/api/channels/fw/mirrors", js, jsonBody(map[string]any{"url": murl}), 409)
	_, mb := call(t, f.URL(), admin, "GET", "/api/channels/fw/mirrors", "", nil)
	var mirrors []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(mb, &mirrors); err != nil || len(mirrors) != 1 {
		t.Fatalf("mirrors: %s", mb)
	}
	write("delete mirror", admin, "DELETE", "/api/channels/fw/mirrors/"+mirrors[0].ID, "", nil, 200,
		read{path: "/api/channels/fw/mirrors", status: 200, has: []string{"!" + murl}})

	// Jobs: one for later (it stays pending), cancelled; a channel action.
	later := time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04:05")
	var job struct {
		ID int64 `json:"id"`
	}
	jb := write("create job", admin, "POST", "/api/jobs", js, jsonBody(map[string]any{"manifest": "generate_indexes", "items_spec": "*", "start_at": later}), 201,
		read{path: "/api/jobs?status=pending", status: 200, has: []string{`"generate_indexes"`}})
	if err := json.Unmarshal(jb, &job); err != nil || job.ID == 0 {
		t.Fatalf("created job: %s", jb)
	}
	jobPath := fmt.Sprintf("/api/jobs/%d", job.ID)
	write("patch job", admin, "PATCH", jobPath, js, []byte(`{"status":"cancelled"}`), 200,
		read{path: jobPath, status: 200, has: []string{`"cancelled"`}})
	same("patch unknown job", admin, "PATCH", "/api/jobs/999999", js, []byte(`{"status":"cancelled"}`), 404)
	ab := write("channel action", admin, "PUT", "/api/channels/fw/actions", js, []byte(`{"action":"generate_indexes"}`), 200,
		read{path: "/api/jobs", status: 200, has: []string{`"generate_indexes"`}})
	if err := json.Unmarshal(ab, &job); err != nil || job.ID == 0 {
		t.Fatalf("channel action: %s", ab)
	}
	if st, b := call(t, f.URL(), admin, "GET", fmt.Sprintf("/api/jobs/%d", job.ID), "", nil); st != 200 {
		t.Fatalf("the action's job on the follower: %d %s", st, b)
	}

	// Channel delete last.
	write("delete channel", admin, "DELETE", "/api/channels/fw", "", nil, 200,
		read{path: "/api/channels/fw", status: 404})
	same("delete unknown channel", admin, "DELETE", "/api/channels/fw", "", nil, 404)

	// Connect: ChannelService and KeyService on the follower.
	ctx := t.Context()
	rpcClient := func(key string) *http.Client {
		return &http.Client{Transport: nodetest.KeyTransport{Key: key, Next: http.DefaultTransport}}
	}
	chOn := func(n *nodetest.Node, key string) condameshv1connect.ChannelServiceClient {
		return condameshv1connect.NewChannelServiceClient(rpcClient(key), n.URL())
	}
	fch, fkeys := chOn(f, admin), condameshv1connect.NewKeyServiceClient(rpcClient(admin), f.URL())
	if _, err := fch.CreateChannel(ctx, &v1.CreateChannelRequest{Channel: &v1.Channel{Name: "rpc-fw"}}); err != nil {
		t.Fatalf("Connect create on the follower: %v", err)
	}
	if _, err := fch.GetChannel(ctx, &v1.GetChannelRequest{Name: "rpc-fw"}); err != nil {
		t.Fatalf("Connect read back on the follower: %v", err)
	}
	private := true
	if _, err := fch.UpdateChannel(ctx, &v1.UpdateChannelRequest{Name: "rpc-fw", Private: &private}); err != nil {
		t.Fatalf("Connect update on the follower: %v", err)
	}
	if got, err := fch.GetChannel(ctx, &v1.GetChannelRequest{Name: "rpc-fw"}); err != nil || !got.Channel.Channel.Private {
		t.Fatalf("Connect read of the update on the follower: %v %v", got, err)
	}
	for _, tc := range []struct {
		name string
		key  string
		call func(cl condameshv1connect.ChannelServiceClient) error
		want connect.Code
	}{
		{"duplicate", admin, func(cl condameshv1connect.ChannelServiceClient) error {
			_, err := cl.CreateChannel(ctx, &v1.CreateChannelRequest{Channel: &v1.Channel{Name: "rpc-fw"}})
			return err
		}, connect.CodeAlreadyExists},
		{"not found", admin, func(cl condameshv1connect.ChannelServiceClient) error {
			_, err := cl.UpdateChannel(ctx, &v1.UpdateChannelRequest{Name: "nope", Private: &private})
			return err
		}, connect.CodeNotFound},
		{"forbidden", bob.Key, func(cl condameshv1connect.ChannelServiceClient) error {
			_, err := cl.DeleteChannel(ctx, &v1.DeleteChannelRequest{Name: "rpc-fw"})
			return err
		}, connect.CodePermissionDenied},
	} {
		for _, n := range []*nodetest.Node{leader, f} {
			if got := connect.CodeOf(tc.call(chOn(n, tc.key))); got != tc.want {
				t.Fatalf("Connect %s on %s: %v, want %v", tc.name, n.ID(), got, tc.want)
			}
		}
	}
	k, err := fkeys.CreateKey(ctx, &v1.CreateKeyRequest{Description: "rpc follower key"})
	if err != nil {
		t.Fatalf("Connect create key on the follower: %v", err)
	}
	if _, err := chOn(f, k.Key).GetChannel(ctx, &v1.GetChannelRequest{Name: "rpc-fw"}); err != nil {
		t.Fatalf("the new key on the follower: %v", err)
	}
	if _, err := fkeys.DeleteKey(ctx, &v1.DeleteKeyRequest{Key: k.Key}); err != nil {
		t.Fatalf("Connect delete key on the follower: %v", err)
	}
	if _, err := chOn(f, k.Key).GetChannel(ctx, &v1.GetChannelRequest{Name: "rpc-fw"}); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("the deleted key on the follower: %v", err)
	}
	if _, err := fch.DeleteChannel(ctx, &v1.DeleteChannelRequest{Name: "rpc-fw"}); err != nil {
		t.Fatalf("Connect delete on the follower: %v", err)
	}
	if _, err := fch.GetChannel(ctx, &v1.GetChannelRequest{Name: "rpc-fw"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("Connect read of the delete on the follower: %v", err)
	}
}

// writer creates channels named prefix-0, prefix-1, ... on one node until
// stopped, remembering which creations were acknowledged.
type writer struct {
	base, prefix string
	mu           sync.Mutex
	acked        []string
	failed       int
}

func (w *writer) run(stop <-chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	hc := &http.Client{Timeout: 5 * time.Second}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		name := fmt.Sprintf("%s-%d", w.prefix, i)
		req, _ := http.NewRequest(http.MethodPost, w.base+"/api/channels", strings.NewReader(`{"name":"`+name+`","private":false}`))
		req.Header.Set("X-API-Key", nodetest.AdminKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		ok := err == nil && resp.StatusCode == http.StatusCreated
		if err == nil {
			resp.Body.Close()
		}
		w.mu.Lock()
		if ok {
			w.acked = append(w.acked, name)
		} else {
			w.failed++
			w.mu.Unlock()
			time.Sleep(20 * time.Millisecond) // the node is down or electing
			continue
		}
		w.mu.Unlock()
	}
}

func (w *writer) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// inRaft reports whether asked's view lists id as a Raft server.
func inRaft(t *testing.T, asked *nodetest.Node, id string) bool {
	t.Helper()
	nodes, err := asked.Cluster().Nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Id == id && n.RaftState != "none" {
			return true
		}
	}
	return false
}

// TestClusterLeaveAndRejoin: POST /api/cluster/leave on a follower
// answers 200; the node leaves Raft (no other node's configuration lists
// it) and stops. A fresh node joins in its place. The node that left,
// restarted on its data directory with Join, is added back by the leader
// (as a non-voter: the cluster has its three voters), catches up and
// takes writes.
func TestClusterLeaveAndRejoin(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	var f *nodetest.Node
	for _, n := range c.Followers(t) {
		if n != c.Nodes[0] { // one started with Join, as `serve --join` does
			f = n
			break
		}
	}
	if st, b := call(t, f.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"before-leave"}`)); st != 201 {
		t.Fatalf("write: %d %s", st, b)
	}
	if st, b := call(t, f.URL(), nodetest.AdminKey, "POST", "/api/cluster/leave", "", nil); st != 200 {
		t.Fatalf("leave: %d %s", st, b)
	}
	var rest []*nodetest.Node
	for _, n := range c.Nodes {
		if n != f {
			rest = append(rest, n)
		}
	}
	eventually(t, 10*time.Second, "the node that left out of every Raft configuration", func() bool {
		for _, n := range rest {
			if inRaft(t, n, f.ID()) {
				return false
			}
		}
		return true
	})
	eventually(t, 10*time.Second, "the node that left stopped", func() bool {
		_, err := http.Get(f.URL() + "/health/live")
		return err != nil
	})
	f.Stop()
	if st, b := call(t, rest[0].URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"while-away"}`)); st != 201 {
		t.Fatalf("write after the leave: %d %s", st, b)
	}
	fresh := c.Add(t)
	c.WaitVoters(t, 3)
	if !inRaft(t, c.Leader(t), fresh.ID()) {
		t.Fatalf("the fresh node is not a Raft server")
	}
	back := c.Restart(t, f)
	eventually(t, 15*time.Second, "the node that left back in Raft", func() bool { return inRaft(t, c.Leader(t), back.ID()) })
	c.WaitApplied(t)
	for _, name := range []string{"before-leave", "while-away"} {
		if st, b := call(t, back.URL(), nodetest.AdminKey, "GET", "/api/channels/"+name, "", nil); st != 200 {
			t.Fatalf("%s on the node back: %d %s", name, st, b)
		}
	}
	if st, b := call(t, back.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"back"}`)); st != 201 {
		t.Fatalf("write through the node back: %d %s", st, b)
	}
	// A loaded machine (the race detector, other packages' tests) may make
	// the short test timers call an election meanwhile: the states settle.
	var got map[string]int
	eventually(t, 15*time.Second, "one leader, two followers and a non-voter after the rejoin", func() bool {
		got = raftStates(restNodes(t, back.URL()))
		return got["leader"] == 1 && got["follower"] == 2 && got["non-voter"] == 1
	})
}

// TestClusterDeadVoterReplaced: a crashed voter shows as dead in the
// node list; the leader promotes the caught-up non-voter in its place and
// removes the dead server from Raft after ReapAfter (3 s with Fast).
func TestClusterDeadVoterReplaced(t *testing.T) {
	c := nodetest.NewCluster(t, 4)
	c.WaitApplied(t)
	leader := c.Leader(t)
	var victim, spare *nodetest.Node
	for _, n := range c.Nodes {
		switch st := n.Cluster().LocalInfo().RaftState; {
		case st == "non-voter":
			spare = n
		case n != leader && victim == nil:
			victim = n
		}
	}
	if victim == nil || spare == nil {
		t.Fatalf("no follower voter or non-voter among %d nodes", len(c.Nodes))
	}
	victim.Crash()
	eventually(t, 10*time.Second, "the crashed node listed as dead", func() bool {
		for _, n := range restNodes(t, leader.URL()) {
			if n.ID == victim.ID() {
				return n.Status == "dead"
			}
		}
		return true // already reaped
	})
	eventually(t, 15*time.Second, "the non-voter promoted and the dead voter removed", func() bool {
		return spare.Cluster().LocalInfo().RaftState == "follower" && !inRaft(t, leader, victim.ID())
	})
	c.WaitVoters(t, 3)
}

// TestClusterRestartAll: every node stopped, then all started again on
// their data directories: the cluster re-forms with its voters, every
// node has the data (its store, then the log tail replayed) and takes
// writes.
func TestClusterRestartAll(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	for i, n := range c.Nodes {
		name := fmt.Sprintf("before-%d", i)
		if st, b := call(t, n.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"`+name+`"}`)); st != 201 {
			t.Fatalf("write: %d %s", st, b)
		}
	}
	c.WaitApplied(t)
	applied := c.Leader(t).Cluster().AppliedIndex()
	c.RestartAll(t)
	c.WaitVoters(t, 3)
	c.WaitApplied(t)
	for _, n := range c.Nodes {
		if got := n.Cluster().AppliedIndex(); got < applied {
			t.Fatalf("%s applied %d after the restart, %d before", n.ID(), got, applied)
		}
		for i := range c.Nodes {
			if st, b := call(t, n.URL(), nodetest.AdminKey, "GET", fmt.Sprintf("/api/channels/before-%d", i), "", nil); st != 200 {
				t.Fatalf("before-%d on %s after the restart: %d %s", i, n.ID(), st, b)
			}
		}
		if st, b := call(t, n.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"after-`+n.ID()+`"}`)); st != 201 {
			t.Fatalf("write on %s after the restart: %d %s", n.ID(), st, b)
		}
	}
}

// TestClusterRequestIDs: a command proposed again with the same request
// id, on the leader or through a follower, applies once and answers the
// first result; download counts flushed by every node reach the
// replicated counters exactly once, so /metrics/channels/<ch> gives the
// cluster-wide sum on any node.
func TestClusterRequestIDs(t *testing.T) {
	c := nodetest.NewCluster(t, 3, func(cfg *node.Config) { cfg.DownloadFlush = 200 * time.Millisecond })
	leader, f := c.Leader(t), c.Followers(t)[0]
	ctx := t.Context()
	if st, b := call(t, f.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"ids"}`)); st != 201 {
		t.Fatalf("create channel: %d %s", st, b)
	}
	hour := time.Now().Truncate(time.Hour).Unix()
	counts := &v1.Command{RequestId: "test-downloads-1", Op: &v1.Command_AddDownloads{AddDownloads: &v1.AddDownloadsOp{Counts: []*v1.DownloadCount{
		{Channel: "ids", Platform: "noarch", Filename: "x-1.0-0.tar.bz2", HourUnix: hour, Count: 5},
	}}}}
	version := &v1.Command{RequestId: "test-version-1", Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: []*v1.PackageVersion{
		{Channel: "ids", Package: "x", Platform: "noarch", Filename: "x-1.0-0.tar.bz2", Version: "1.0", BuildString: "0", Sha256: strings.Repeat("a", 64), Size: 1,
			RecordJson: []byte(`{"name":"x","version":"1.0","build":"0","build_number":0,"depends":[],"subdir":"noarch"}`)},
	}}}}
	for _, cmd := range []*v1.Command{counts, version} {
		for _, n := range []*nodetest.Node{leader, leader, f, f} {
			if _, err := n.Propose(ctx, proto.Clone(cmd).(*v1.Command)); err != nil {
				t.Fatalf("%s proposed again on %s: %v (want the first result)", cmd.RequestId, n.ID(), err)
			}
		}
	}
	// Without a request id the same PutVersions is a second command: it
	// conflicts.
	again := proto.Clone(version).(*v1.Command)
	again.RequestId = ""
	if _, err := f.Propose(ctx, again); !errors.Is(err, catalog.ErrExists) {
		t.Fatalf("the same version without a request id: %v, want ErrExists", err)
	}
	c.WaitApplied(t)
	for _, n := range c.Nodes {
		if got, err := n.Catalog().DownloadTotal(ctx, "ids", "noarch", "x-1.0-0.tar.bz2"); err != nil || got != 5 {
			t.Fatalf("downloads on %s: %d %v; want 5 (counted once)", n.ID(), got, err)
		}
	}

	// Real downloads on every node (each gets the package bytes by its own
	// upload: moving bytes between nodes is not there yet).
	spec := condatest.Spec{Name: "dl", Version: "1.0", Build: "0"}
	file, data := condatest.Filename(spec, ".tar.bz2"), condatest.TarBz2(t, spec)
	if st, b := call(t, f.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"dl","private":false}`)); st != 201 {
		t.Fatalf("create channel: %d %s", st, b)
	}
	want := 0
	for i, n := range c.Nodes {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		_ = mw.WriteField("force", "true")
		w, _ := mw.CreateFormFile("files", file)
		_, _ = w.Write(data)
		_ = mw.Close()
		if st, b := call(t, n.URL(), nodetest.AdminKey, "POST", "/api/channels/dl/files/", mw.FormDataContentType(), &buf); st != 201 {
			t.Fatalf("upload on %s: %d %s", n.ID(), st, b)
		}
		for range i + 2 {
			if st, b := call(t, n.URL(), "", "GET", "/get/dl/noarch/"+file, "", nil); st != 200 || !bytes.Equal(b, data) {
				t.Fatalf("download from %s: %d", n.ID(), st)
			}
			want++
		}
	}
	total := func(n *nodetest.Node) int64 {
		st, b := call(t, n.URL(), "", "GET", "/metrics/channels/dl?period=H", "", nil)
		if st != 200 {
			t.Fatalf("metrics on %s: %d %s", n.ID(), st, b)
		}
		sum, err := nodetest.DownloadSum(b)
		if err != nil {
			t.Fatalf("metrics: %v: %s", err, b)
		}
		return sum
	}
	eventually(t, 10*time.Second, fmt.Sprintf("%d downloads counted on every node", want), func() bool {
		for _, n := range c.Nodes {
			if total(n) != int64(want) {
				return false
			}
		}
		return true
	})
	// A few more flush intervals: nothing is counted twice.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for _, n := range c.Nodes {
			if got := total(n); got != int64(want) {
				t.Fatalf("downloads on %s: %d, want %d", n.ID(), got, want)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterFollowerPartitioned: a follower cut off from its peers (Raft,
// gossip, node-to-node calls; its HTTP API still answers) turns not ready
// within a few seconds, and a write sent to it answers 503 after the
// propose timeout, while the majority keeps taking writes. Healed, it
// catches up, serves those writes and is ready again.
func TestClusterFollowerPartitioned(t *testing.T) {
	c := nodetest.NewCluster(t, 3, nodetest.WithProposeTimeout(2*time.Second), nodetest.Partitionable)
	leader := c.Leader(t)
	f := c.Followers(t)[0]
	f.Partition()
	eventually(t, 5*time.Second, "503 from the partitioned node's /health/ready", func() bool {
		st, _ := call(t, f.URL(), "", http.MethodGet, "/health/ready", "", nil)
		return st == http.StatusServiceUnavailable
	})
	for i, n := range c.Live() {
		if n == f {
			continue
		}
		if st, b := call(t, n.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(fmt.Sprintf(`{"name":"majority-%d"}`, i))); st != 201 {
			t.Fatalf("write on the majority (%s): %d %s", n.ID(), st, b)
		}
	}
	if st, b := call(t, f.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"cut-off"}`)); st != http.StatusServiceUnavailable {
		t.Fatalf("write on the partitioned node: %d %s; want 503", st, b)
	}
	if st, b := call(t, f.URL(), "", http.MethodGet, "/health/live", "", nil); st != 200 {
		t.Fatalf("/health/live on the partitioned node: %d %s", st, b)
	}
	// A linearizable read cannot be served cut off: 503, not a stale 404.
	if st, b := call(t, f.URL(), nodetest.AdminKey, "GET", "/api/channels/majority-0?consistent=true", "", nil); st != http.StatusServiceUnavailable {
		t.Fatalf("consistent read on the partitioned node: %d %s; want 503", st, b)
	}
	// Long enough for gossip to declare it dead.
	eventually(t, 15*time.Second, "the partitioned node dead in the leader's view", func() bool {
		for _, n := range restNodes(t, leader.URL()) {
			if n.ID == f.ID() {
				return n.Status == "dead"
			}
		}
		return false
	})
	f.Heal()
	want := leader.Cluster().AppliedIndex()
	eventually(t, 15*time.Second, "the healed node caught up and ready", func() bool {
		st, _ := call(t, f.URL(), "", http.MethodGet, "/health/ready", "", nil)
		return st == http.StatusOK && f.Cluster().AppliedIndex() >= want
	})
	for i, n := range c.Live() {
		if n == f {
			continue
		}
		if st, b := call(t, f.URL(), nodetest.AdminKey, "GET", fmt.Sprintf("/api/channels/majority-%d", i), "", nil); st != 200 {
			t.Fatalf("a write of the majority on the healed node: %d %s", st, b)
		}
	}
	if st, b := call(t, f.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"healed"}`)); st != 201 {
		t.Fatalf("write on the healed node: %d %s", st, b)
	}
	c.WaitVoters(t, 3)
	waitAllAlive(t, c)
}

// waitAllAlive waits until every live node lists every live node as
// alive in gossip.
func waitAllAlive(t *testing.T, c *nodetest.Cluster) {
	t.Helper()
	var views []string
	defer func() {
		if t.Failed() {
			t.Logf("gossip views: %v", views)
		}
	}()
	eventually(t, 15*time.Second, "every node alive in every node's view", func() bool {
		views = views[:0]
		all := true
		for _, asked := range c.Live() {
			view := asked.ID() + " sees"
			alive := 0
			for _, n := range restNodes(t, asked.URL()) {
				view += " " + n.ID + ":" + n.Status
				if n.Status == "alive" {
					alive++
				}
			}
			views = append(views, view)
			all = all && alive == len(c.Live())
		}
		return all
	})
}

// TestClusterLeaderLeaves: POST /api/cluster/leave on the leader hands
// leadership over, leaves Raft and stops; the others go on with a new
// leader and take writes.
func TestClusterLeaderLeaves(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	old := c.Leader(t)
	if st, b := call(t, old.URL(), nodetest.AdminKey, "POST", "/api/cluster/leave", "", nil); st != 200 {
		t.Fatalf("leave on the leader: %d %s", st, b)
	}
	eventually(t, 10*time.Second, "the old leader stopped", func() bool {
		_, err := http.Get(old.URL() + "/health/live")
		return err != nil
	})
	old.Stop()
	leader := c.Leader(t)
	if leader == old {
		t.Fatal("the node that left still leads")
	}
	eventually(t, 10*time.Second, "the old leader out of the Raft configuration", func() bool { return !inRaft(t, leader, old.ID()) })
	for _, n := range c.Live() {
		if st, b := call(t, n.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"after-`+n.ID()+`"}`)); st != 201 {
			t.Fatalf("write on %s after the leader left: %d %s", n.ID(), st, b)
		}
	}
}

// TestClusterIdenticalIndexes: packages uploaded through different nodes
// give every node the same repodata.json bytes and ETag.
func TestClusterIdenticalIndexes(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	if st, b := call(t, c.Nodes[1].URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"same","private":false}`)); st != 201 {
		t.Fatalf("create channel: %d %s", st, b)
	}
	for i, n := range c.Nodes {
		spec := condatest.Spec{Name: fmt.Sprintf("pkg%d", i), Version: "1.0", Build: "0"}
		data := condatest.TarBz2(t, spec)
		if st, b := call(t, n.URL(), nodetest.AdminKey, "POST", "/api/channels/same/upload/"+condatest.Filename(spec, ".tar.bz2")+"?sha256="+sha(data), "application/octet-stream", bytes.NewReader(data)); st != 201 {
			t.Fatalf("upload on %s: %d %s", n.ID(), st, b)
		}
	}
	index := func(n *nodetest.Node) (string, []byte) {
		resp, err := http.Get(n.URL() + "/get/same/noarch/repodata.json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", nil
		}
		return resp.Header.Get("ETag"), b
	}
	eventually(t, 10*time.Second, "the same repodata.json and ETag on every node", func() bool {
		etag0, b0 := index(c.Nodes[0])
		if etag0 == "" || !bytes.Contains(b0, []byte("pkg2-1.0-0.tar.bz2")) {
			return false
		}
		for _, n := range c.Nodes[1:] {
			if etag, b := index(n); etag != etag0 || !bytes.Equal(b, b0) {
				return false
			}
		}
		return true
	})
}

// TestClusterConsistentRead: a write acknowledged by the leader is seen at
// once by a read on a follower that asks for a linearizable read
// (?consistent=true on REST, the Condamesh-Consistent header on Connect).
func TestClusterConsistentRead(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	leader, f := c.Leader(t), c.Followers(t)[0]
	consistent := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set(api.ConsistentHeader, "true")
			return next(ctx, req)
		}
	})
	rpc := condameshv1connect.NewChannelServiceClient(&http.Client{Transport: nodetest.KeyTransport{Key: nodetest.AdminKey, Next: http.DefaultTransport}}, f.URL(),
		connect.WithInterceptors(consistent))
	for i := range 30 {
		name := fmt.Sprintf("lin-%d", i)
		if st, b := call(t, leader.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"`+name+`"}`)); st != 201 {
			t.Fatalf("write on the leader: %d %s", st, b)
		}
		if i%2 == 0 {
			if st, b := call(t, f.URL(), nodetest.AdminKey, "GET", "/api/channels/"+name+"?consistent=true", "", nil); st != 200 {
				t.Fatalf("consistent REST read of %s on a follower: %d %s", name, st, b)
			}
			continue
		}
		if _, err := rpc.GetChannel(t.Context(), &v1.GetChannelRequest{Name: name}); err != nil {
			t.Fatalf("consistent Connect read of %s on a follower: %v", name, err)
		}
	}
}

// TestClusterRestartOnNewAddresses: a follower restarted on its data with
// other ports (a node whose address changed) is back in Raft at its new
// address, caught up, and takes writes.
func TestClusterRestartOnNewAddresses(t *testing.T) {
	c := nodetest.NewCluster(t, 3)
	f := c.Followers(t)[0]
	for f == c.Nodes[0] { // one started with Join
		f = c.Followers(t)[1]
	}
	oldRaft := f.Addrs().Raft
	// Back within 20 s: its old gossip address is declared dead and
	// reclaimed (5 s) meanwhile; the periodic push/pull alone took 25-45 s.
	deadline := time.Now().Add(20 * time.Second)
	back := c.RestartMoved(t, f)
	if back.Addrs().Raft == oldRaft {
		t.Fatalf("same raft address %s", oldRaft)
	}
	if time.Now().After(deadline) {
		t.Fatalf("the moved node was not back in the cluster within 20 s")
	}
	if st, b := call(t, c.Leader(t).URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"moved"}`)); st != 201 {
		t.Fatalf("write: %d %s", st, b)
	}
	eventually(t, time.Until(deadline), "the moved node at its new address in the leader's view", func() bool {
		for _, n := range restNodes(t, c.Leader(t).URL()) {
			if n.ID == back.ID() {
				return n.RaftAddr == back.Addrs().Raft && n.RaftState != "none" && n.Status == "alive"
			}
		}
		return false
	})
	c.WaitVoters(t, 3)
	c.WaitApplied(t)
	if st, b := call(t, back.URL(), nodetest.AdminKey, "GET", "/api/channels/moved", "", nil); st != 200 {
		t.Fatalf("a write on the moved node: %d %s", st, b)
	}
	if st, b := call(t, back.URL(), nodetest.AdminKey, "POST", "/api/channels", "application/json", strings.NewReader(`{"name":"from-moved"}`)); st != 201 {
		t.Fatalf("write through the moved node: %d %s", st, b)
	}
}
