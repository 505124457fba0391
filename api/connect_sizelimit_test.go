package api_test

import (
	"context"
	"github.com/condamesh/condamesh/node/nodetest"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
	"google.golang.org/protobuf/proto"
)

// TestConnectSizeLimitNeedsElevation: REST refuses a size_limit on a new
// channel from a caller who is not a server owner or maintainer (403);
// Connect only checks size_limit_set, which the caller chooses, and takes
// channel.size_limit as sent.
func TestConnectSizeLimitNeedsElevation(t *testing.T) {
	inHTTPModes(t, testConnectSizeLimitNeedsElevation)
}

func testConnectSizeLimitNeedsElevation(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	member := e.newUser(t, "sizer", "member")
	e.do(t, "POST", "/api/channels", member, map[string]any{"name": "rest-sized", "size_limit": 5}, nil).want(t, http.StatusForbidden)
	rpc := condameshv1connect.NewChannelServiceClient(h2c(member), e.url)
	_, err := rpc.CreateChannel(context.Background(), &v1.CreateChannelRequest{Channel: &v1.Channel{Name: "rpc-sized", SizeLimit: proto.Int64(5)}})
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		ch, _ := e.n.Catalog().Channel(context.Background(), "rpc-sized")
		t.Fatalf("Connect CreateChannel with channel.size_limit by a member: %v (size_limit stored: %v), want PermissionDenied as REST", err, ch.GetSizeLimit())
	}
}
