package node_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
	"github.com/condamesh/condamesh/upstream"
)

// TestMemberMetricsEndpointIsConfined: a channel owner who is not a server
// owner registers a mirror whose metrics_endpoint is an internal address
// (only its api_endpoint is checked at registration). When a server owner
// then runs synchronize_metrics on that channel, the endpoint must still be
// fetched within the restricted networks: the restriction follows who gave
// the URL (ChannelMirror.restricted), not only who runs the job.
func TestMemberMetricsEndpointIsConfined(t *testing.T) {
	internalLn, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal("127.0.0.0/8 beyond 127.0.0.1 is needed (Linux loopback has it):", err)
	}
	var hits atomic.Int64
	internal := &httptest.Server{Listener: internalLn, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, `{"packages":{}}`)
	})}}
	internal.Start()
	defer internal.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"name":"m","mirror_channel_url":"http://primary/get/c","mirror_mode":"mirror"}`)
	}))
	defer api.Close()
	deny127002 := func(c *node.Config) {
		c.FetchNetworks = &upstream.Networks{Deny: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}
	}
	n := nodetest.Start(t, deny127002)
	do := func(key, method, path, body string) (int, string) {
		t.Helper()
		st, b := call(t, n.URL(), key, method, path, "", strings.NewReader(body))
		return st, string(b)
	}
	eve := newUser(t, n.URL(), "eve", "member")
	if st, b := do(eve, "POST", "/api/channels", `{"name":"evec","private":false}`); st != 201 {
		t.Fatalf("member creates a channel: %d %s", st, b)
	}
	reg := fmt.Sprintf(`{"url":"%s/get/m","api_endpoint":"%s/api/channels/m","metrics_endpoint":"%s/internal/admin"}`, api.URL, api.URL, internal.URL)
	if st, b := do(eve, "POST", "/api/channels/evec/mirrors", reg); st != 201 {
		t.Fatalf("member registers a mirror: %d %s", st, b)
	}
	st, b := do(nodetest.AdminKey, "PUT", "/api/channels/evec/actions", `{"action":"synchronize_metrics"}`)
	if st != 200 {
		t.Fatalf("owner runs synchronize_metrics: %d %s", st, b)
	}
	var job struct{ ID int64 }
	_ = json.Unmarshal([]byte(b), &job)
	waitJobEnds(t, func() string {
		_, b := do(nodetest.AdminKey, "GET", fmt.Sprintf("/api/jobs/%d", job.ID), "")
		return b
	})
	if h := hits.Load(); h > 0 {
		t.Fatalf("a member's metrics_endpoint on a denied network was fetched %d times by a server owner's job", h)
	}
}
