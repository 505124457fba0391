package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/condamesh/condamesh/node/nodetest"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
	"github.com/condamesh/condamesh/node"
	"google.golang.org/protobuf/encoding/protojson"
)

// lockedBuffer collects a node's logs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The secrets a channel owner gives condamesh in TestSecretsAreWriteOnly.
var upstreamSecrets = []string{"us3rname", "pa55word", "tok3n", "s3cr3t-auth", "mus3r", "mpa55", "mtok3n"}

// leaks returns the secrets found in text.
func leaks(text string) []string {
	var out []string
	for _, s := range upstreamSecrets {
		if strings.Contains(text, s) {
			out = append(out, s)
		}
	}
	return out
}

// TestSecretsAreWriteOnly: an upstream URL's user info and token, the
// upstream Authorization and a registered mirror's credentials appear in
// no answer (REST create/get/list/patch, Connect create/get/list/update,
// jobs and tasks, the mirror registry, errors, /metrics) for anonymous
// callers, channel members or owners, nor in the node's logs; writing
// back the masked values keeps the stored secrets.
func TestSecretsAreWriteOnly(t *testing.T) { inHTTPModes(t, testSecretsAreWriteOnly) }

func testSecretsAreWriteOnly(t *testing.T, mode ...nodetest.Option) {
	var logs lockedBuffer
	e := startIn(t, mode, func(c *node.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := context.Background()
	member := e.newUser(t, "mem", "")
	dead := "http://us3rname:pa55word@127.0.0.1:1/t/tok3n/upstream"
	auth := map[string]any{"upstream_authorization": "Bearer s3cr3t-auth"}

	// Answers of the creating calls, REST and Connect.
	var answers []string
	r := e.do(t, "POST", "/api/channels", admin, map[string]any{
		"name": "sec-proxy", "private": false, "mirror_channel_url": dead, "mirror_mode": "proxy", "metadata": auth,
	}, nil).want(t, http.StatusCreated)
	answers = append(answers, r.String())
	rpc := condameshv1connect.NewChannelServiceClient(h2c(admin), e.url)
	public := false
	created, err := rpc.CreateChannel(ctx, &v1.CreateChannelRequest{Private: &public, Channel: &v1.Channel{
		Name: "sec-mirror", MirrorChannelUrl: dead, MirrorMode: "mirror", Metadata: &v1.ChannelMetadata{UpstreamAuthorization: "Bearer s3cr3t-auth"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	answers = append(answers, protojson.Format(created))
	e.newChannel(t, "sec-local", false, admin)
	for _, ch := range []string{"sec-mirror", "sec-local"} { // proxies have no members
		e.addMember(t, ch, "mem", "member")
	}
	// A mirror registered with credentials in its URLs.
	if _, err := e.n.Propose(ctx, &v1.Command{Op: &v1.Command_PutMirror{PutMirror: &v1.PutMirrorOp{Mirror: &v1.ChannelMirror{
		Id: "6c1b3b7e-8f3a-4d2b-9c55-0a1e2f3a4b5c", Channel: "sec-local", Url: "https://mus3r:mpa55@mirror.example/t/mtok3n/get/sec-local",
		ApiEndpoint: "https://mus3r:mpa55@mirror.example/t/mtok3n/api/channels/sec-local", MetricsEndpoint: "https://mirror.example/metrics/channels/sec-local?key=mtok3n",
	}}}}); err != nil {
		t.Fatal(err)
	}
	// The mirror's first synchronisation fails on the dead upstream: its
	// task records the error.
	eventually(t, "the mirror's sync job to fail", func() bool {
		var jobs struct {
			Result []struct {
				ID     int64  `json:"id"`
				Status string `json:"status"`
			} `json:"result"`
		}
		e.get(t, "/api/jobs?status=failed", admin).want(t, 200).decode(t, &jobs)
		return len(jobs.Result) > 0
	})
	// The proxy answers an error naming its upstream.
	e.get(t, "/get/sec-proxy/noarch/repodata.json", "").want(t, http.StatusBadGateway, http.StatusGatewayTimeout)

	// Writing back what was read keeps the secrets (REST PATCH merges
	// key by key; Connect replaces the metadata).
	answers = append(answers, e.do(t, "PATCH", "/api/channels/sec-proxy", admin, map[string]any{
		"metadata": map[string]any{"upstream_authorization": "***", "prune": true},
	}, nil).want(t, 200).String())
	got, err := rpc.GetChannel(ctx, &v1.GetChannelRequest{Name: "sec-mirror"})
	if err != nil {
		t.Fatal(err)
	}
	md := got.Channel.Channel.Metadata
	md.Prune = true
	up, err := rpc.UpdateChannel(ctx, &v1.UpdateChannelRequest{Name: "sec-mirror", Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	answers = append(answers, protojson.Format(up))
	for _, name := range []string{"sec-proxy", "sec-mirror"} {
		stored, err := e.n.Catalog().Channel(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Metadata.GetUpstreamAuthorization() != "Bearer s3cr3t-auth" || !stored.Metadata.GetPrune() || stored.MirrorChannelUrl != dead {
			t.Fatalf("%s after writing back what was read: %v", name, stored)
		}
	}
	for _, a := range answers {
		if l := leaks(a); l != nil {
			t.Errorf("an answer shows %v: %s", l, a)
		}
	}

	var jobIDs []string
	var jobs struct {
		Result []struct {
			ID int64 `json:"id"`
		} `json:"result"`
	}
	e.get(t, "/api/jobs?status=failed&status=success&status=pending&status=running", admin).want(t, 200).decode(t, &jobs)
	for _, j := range jobs.Result {
		jobIDs = append(jobIDs, "/api/jobs/"+jsonInt(j.ID), "/api/jobs/"+jsonInt(j.ID)+"/tasks")
	}
	paths := append([]string{
		"/api/channels", "/api/channels?public=false", "/api/paginated/channels",
		"/api/channels/sec-proxy", "/api/channels/sec-mirror", "/api/channels/sec-local",
		"/api/channels/sec-local/mirrors", "/api/channels/sec-local/mirrors/config",
		"/api/channels/sec-local/mirrors/config?client=pixi", "/api/channels/sec-local/mirrors/config?client=mamba",
		"/api/channels/sec-local/mirrors/config?client=conda", "/metrics/channels/sec-local/mirrors",
		"/api/jobs?status=failed&status=success&status=pending&status=running",
		"/get/sec-proxy/noarch/repodata.json", "/get/sec-mirror/noarch/repodata.json", "/metrics",
	}, jobIDs...)
	callers := map[string]string{"anonymous": "", "member": member, "owner": admin}
	for who, key := range callers {
		t.Run(who, func(t *testing.T) {
			seen := 0
			for _, p := range paths {
				r := e.get(t, p, key)
				if r.status == http.StatusOK {
					seen++
				}
				if l := leaks(string(r.body)); l != nil {
					t.Errorf("%s: GET %s shows %v: %s", who, p, l, r.body)
				}
			}
			if seen < 8 {
				t.Errorf("%s could read only %d of the answers: the check proves little", who, seen)
			}
			cl := condameshv1connect.NewChannelServiceClient(h2c(key), e.url, connect.WithProtoJSON())
			for _, name := range []string{"sec-proxy", "sec-mirror"} {
				g, err := cl.GetChannel(ctx, &v1.GetChannelRequest{Name: name})
				if err != nil {
					t.Fatal(err)
				}
				if g.Channel.Channel.MirrorChannelUrl == "" || g.Channel.Channel.Metadata.GetUpstreamAuthorization() != "***" {
					t.Errorf("%s: %s: the masked fields should read as set: %v", who, name, g.Channel.Channel)
				}
				if l := leaks(protojson.Format(g)); l != nil {
					t.Errorf("%s: Connect GetChannel(%s) shows %v", who, name, l)
				}
			}
			l, err := cl.ListChannels(ctx, &v1.ListChannelsRequest{})
			if err != nil || len(l.Channels) < 3 {
				t.Fatalf("%s: ListChannels: %v %v", who, err, l)
			}
			if lk := leaks(protojson.Format(l)); lk != nil {
				t.Errorf("%s: Connect ListChannels shows %v", who, lk)
			}
		})
	}
	if l := leaks(logs.String()); l != nil {
		t.Errorf("the logs show %v:\n%s", l, logs.String())
	}
}

func jsonInt(i int64) string { b, _ := json.Marshal(i); return string(b) }
