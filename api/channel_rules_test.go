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

// TestChannelRulesShared: REST and Connect refuse the same new channels
// (the rules live once, in catalog) and default to the same visibility.
func TestChannelRulesShared(t *testing.T) { inHTTPModes(t, testChannelRulesShared) }

func testChannelRulesShared(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	ctx := context.Background()
	rpc := condameshv1connect.NewChannelServiceClient(h2c(admin), e.url)
	for _, c := range []struct {
		name string
		rest map[string]any
		rpc  *v1.CreateChannelRequest
	}{
		{"file URL",
			map[string]any{"name": "bad-file", "mirror_channel_url": "file:///etc/", "mirror_mode": "proxy"},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "bad-file", MirrorChannelUrl: "file:///etc/", MirrorMode: "proxy"}}},
		{"URL without host",
			map[string]any{"name": "bad-host", "mirror_channel_url": "http:///etc", "mirror_mode": "proxy"},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "bad-host", MirrorChannelUrl: "http:///etc", MirrorMode: "proxy"}}},
		{"URL with a query (would swallow the file paths)",
			map[string]any{"name": "bad-query", "mirror_channel_url": "http://10.0.0.1/latest/meta-data/x?y=", "mirror_mode": "proxy"},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "bad-query", MirrorChannelUrl: "http://10.0.0.1/latest/meta-data/x?y=", MirrorMode: "proxy"}}},
		{"URL with a fragment",
			map[string]any{"name": "bad-frag", "mirror_channel_url": "https://example.org/c#x", "mirror_mode": "mirror"},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "bad-frag", MirrorChannelUrl: "https://example.org/c#x", MirrorMode: "mirror"}}},
		{"mirror mode without URL",
			map[string]any{"name": "bad-mode", "mirror_mode": "mirror"},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "bad-mode", MirrorMode: "mirror"}}},
		{"URL without mode",
			map[string]any{"name": "bad-nomode", "mirror_channel_url": "https://example.org/c"},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "bad-nomode", MirrorChannelUrl: "https://example.org/c"}}},
		{"unknown mode",
			map[string]any{"name": "bad-enum", "mirror_channel_url": "https://example.org/c", "mirror_mode": "copy"},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "bad-enum", MirrorChannelUrl: "https://example.org/c", MirrorMode: "copy"}}},
		{"underscore",
			map[string]any{"name": "bad_name"},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "bad_name"}}},
		{"slash",
			map[string]any{"name": "bad/name"},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "bad/name"}}},
		{"empty name",
			map[string]any{"name": ""},
			&v1.CreateChannelRequest{Channel: &v1.Channel{}}},
		{"long name",
			map[string]any{"name": "n123456789012345678901234567890123456789012345678901"},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "n123456789012345678901234567890123456789012345678901"}}},
		{"negative sync interval",
			map[string]any{"name": "bad-sync", "metadata": map[string]any{"sync_interval_seconds": -1}},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "bad-sync", Metadata: &v1.ChannelMetadata{SyncIntervalSeconds: -1}}}},
		{"include and exclude",
			map[string]any{"name": "bad-lists", "mirror_channel_url": "https://example.org/c", "mirror_mode": "mirror", "metadata": map[string]any{"includelist": []string{}, "excludelist": []string{}}},
			&v1.CreateChannelRequest{Actions: &v1.StringList{}, Channel: &v1.Channel{Name: "bad-lists", MirrorChannelUrl: "https://example.org/c", MirrorMode: "mirror", Metadata: &v1.ChannelMetadata{Includelist: &v1.StringList{}, Excludelist: &v1.StringList{}}}}},
		{"includelist glob with an unclosed set",
			map[string]any{"name": "bad-glob", "mirror_channel_url": "https://example.org/c", "mirror_mode": "mirror", "metadata": map[string]any{"includelist": []string{"numpy", "[!m*"}}},
			&v1.CreateChannelRequest{Actions: &v1.StringList{}, Channel: &v1.Channel{Name: "bad-glob", MirrorChannelUrl: "https://example.org/c", MirrorMode: "mirror", Metadata: &v1.ChannelMetadata{Includelist: &v1.StringList{Items: []string{"numpy", "[!m*"}}}}}},
		{"excludelist glob with a reversed range",
			map[string]any{"name": "bad-range", "mirror_channel_url": "https://example.org/c", "mirror_mode": "mirror", "metadata": map[string]any{"excludelist": []string{"[z-a]*"}}},
			&v1.CreateChannelRequest{Actions: &v1.StringList{}, Channel: &v1.Channel{Name: "bad-range", MirrorChannelUrl: "https://example.org/c", MirrorMode: "mirror", Metadata: &v1.ChannelMetadata{Excludelist: &v1.StringList{Items: []string{"[z-a]*"}}}}}},
		{"unknown action",
			map[string]any{"name": "bad-action", "actions": []string{"format_disk"}},
			&v1.CreateChannelRequest{Channel: &v1.Channel{Name: "bad-action"}, Actions: &v1.StringList{Items: []string{"format_disk"}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.do(t, "POST", "/api/channels", admin, c.rest, nil).want(t, http.StatusUnprocessableEntity)
			_, err := rpc.CreateChannel(ctx, c.rpc)
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("Connect accepted what REST refuses: %v", err)
			}
			if name := c.rpc.GetChannel().GetName(); name != "" {
				if _, err := e.n.Catalog().Channel(ctx, name); err == nil {
					t.Fatalf("channel %s was created", name)
				}
			}
		})
	}

	// Visibility: private unless asked otherwise, in both APIs.
	public := false
	for _, c := range []struct {
		name        string
		create      func()
		wantPrivate bool
	}{
		{"rest-default", func() {
			e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "rest-default"}, nil).want(t, http.StatusCreated)
		}, true},
		{"rpc-default", func() {
			if _, err := rpc.CreateChannel(ctx, &v1.CreateChannelRequest{Channel: &v1.Channel{Name: "rpc-default"}}); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"rpc-public", func() {
			if _, err := rpc.CreateChannel(ctx, &v1.CreateChannelRequest{Channel: &v1.Channel{Name: "rpc-public"}, Private: proto.Bool(public)}); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		c.create()
		ch, err := e.n.Catalog().Channel(ctx, c.name)
		if err != nil || ch.Private != c.wantPrivate {
			t.Errorf("%s: private=%v (%v), want %v", c.name, ch.GetPrivate(), err, c.wantPrivate)
		}
		want := http.StatusOK
		if c.wantPrivate {
			want = http.StatusUnauthorized
		}
		e.get(t, "/api/channels/"+c.name, "").want(t, want)
	}

	// Changed metadata is held to the same rules.
	e.do(t, "PATCH", "/api/channels/rest-default", admin, map[string]any{"metadata": map[string]any{"sync_interval_seconds": -5}}, nil).want(t, http.StatusUnprocessableEntity)
	if _, err := rpc.UpdateChannel(ctx, &v1.UpdateChannelRequest{Name: "rpc-default", Metadata: &v1.ChannelMetadata{SyncIntervalSeconds: -5}}); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("Connect update with a negative sync interval: %v", err)
	}
	e.do(t, "PATCH", "/api/channels/rest-default", admin, map[string]any{"metadata": map[string]any{"excludelist": []string{"[a-"}}}, nil).want(t, http.StatusUnprocessableEntity)
	if _, err := rpc.UpdateChannel(ctx, &v1.UpdateChannelRequest{Name: "rpc-default", Metadata: &v1.ChannelMetadata{Excludelist: &v1.StringList{Items: []string{"[a-"}}}}); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("Connect update with an unclosed glob set: %v", err)
	}
	// fnmatch globs, prefixes and exact names are kept.
	e.do(t, "PATCH", "/api/channels/rest-default", admin, map[string]any{"metadata": map[string]any{"excludelist": []string{"[!m]*", "numpy", "py?hon-3.12.0-h0_0.conda"}}}, nil).want(t, http.StatusOK)
	if _, err := rpc.UpdateChannel(ctx, &v1.UpdateChannelRequest{Name: "rpc-default", Metadata: &v1.ChannelMetadata{Includelist: &v1.StringList{Items: []string{"[a-c]*", "numpy"}}}}); err != nil {
		t.Fatalf("Connect update with valid globs: %v", err)
	}
}
