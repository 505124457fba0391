package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
	"github.com/condamesh/condamesh/node/nodetest"
)

// h2c is a client speaking cleartext HTTP/2, which gRPC needs.
func h2c(key string) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: nodetest.KeyTransport{Key: key, Next: &http.Transport{Protocols: &p}}}
}

// TestConnectServices runs the same cases over the Connect protocol (HTTP/1.1
// JSON and binary) and over gRPC (HTTP/2), against one real node, and checks
// REST sees what Connect wrote.
func TestConnectServices(t *testing.T) { inHTTPModes(t, testConnectServices) }

func testConnectServices(t *testing.T, mode ...nodetest.Option) {
	n := nodetest.Start(t, mode...)
	protocols := map[string][]connect.ClientOption{
		"connect-proto": nil,
		"connect-json":  {connect.WithProtoJSON()},
		"grpc":          {connect.WithGRPC()},
	}
	ctx := context.Background()
	for name, opts := range protocols {
		t.Run(name, func(t *testing.T) {
			ch := condameshv1connect.NewChannelServiceClient(h2c(nodetest.AdminKey), n.URL(), opts...)
			anon := condameshv1connect.NewChannelServiceClient(h2c(""), n.URL(), opts...)
			keys := condameshv1connect.NewKeyServiceClient(h2c(nodetest.AdminKey), n.URL(), opts...)
			pkgs := condameshv1connect.NewPackageServiceClient(h2c(nodetest.AdminKey), n.URL(), opts...)
			chName := "rpc-" + name

			res, err := ch.CreateChannel(ctx, &v1.CreateChannelRequest{Channel: &v1.Channel{Name: chName, Description: "via " + name}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Channel.Channel.Ttl != 36000 || res.Channel.MembersCount != 1 {
				t.Fatalf("created %+v", res.Channel)
			}
			_, err = ch.CreateChannel(ctx, &v1.CreateChannelRequest{Channel: &v1.Channel{Name: chName}})
			if code := connect.CodeOf(err); code != connect.CodeAlreadyExists {
				t.Fatalf("duplicate: code %v (%v)", code, err)
			}
			_, err = anon.CreateChannel(ctx, &v1.CreateChannelRequest{Channel: &v1.Channel{Name: chName + "x"}})
			if code := connect.CodeOf(err); code != connect.CodeUnauthenticated {
				t.Fatalf("anonymous create: code %v", code)
			}
			_, err = ch.GetChannel(ctx, &v1.GetChannelRequest{Name: "nope"})
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound || ce.Message() != "Channel nope not found" {
				t.Fatalf("unknown channel: %v", err)
			}
			private := true
			up, err := ch.UpdateChannel(ctx, &v1.UpdateChannelRequest{Name: chName, Private: &private})
			if err != nil || !up.Channel.Channel.Private {
				t.Fatalf("update: %v %+v", err, up)
			}
			if _, err := anon.GetChannel(ctx, &v1.GetChannelRequest{Name: chName}); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("anonymous read of private channel: %v", err)
			}
			// REST sees the Connect write.
			resp, err := h2c(nodetest.AdminKey).Get(n.URL() + "/api/channels/" + chName)
			if err != nil {
				t.Fatal(err)
			}
			var rest map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&rest)
			resp.Body.Close()
			if rest["private"] != true || rest["description"] != "via "+name {
				t.Fatalf("REST view %v", rest)
			}
			lp, err := pkgs.ListPackages(ctx, &v1.ListPackagesRequest{Channel: chName})
			if err != nil || len(lp.Packages) != 0 {
				t.Fatalf("list packages: %v %v", err, lp)
			}
			k, err := keys.CreateKey(ctx, &v1.CreateKeyRequest{Description: "rpc key"})
			if err != nil || len(k.Key) != 32 {
				t.Fatalf("create key: %v", err)
			}
			withNew := condameshv1connect.NewChannelServiceClient(h2c(k.Key), n.URL(), opts...)
			if _, err := withNew.GetChannel(ctx, &v1.GetChannelRequest{Name: chName}); err != nil {
				t.Fatalf("new key cannot read: %v", err)
			}
			if _, err := keys.DeleteKey(ctx, &v1.DeleteKeyRequest{Key: k.Key}); err != nil {
				t.Fatal(err)
			}
			if _, err := withNew.GetChannel(ctx, &v1.GetChannelRequest{Name: chName}); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("deleted key still works: %v", err)
			}
			if _, err := ch.DeleteChannel(ctx, &v1.DeleteChannelRequest{Name: chName}); err != nil {
				t.Fatal(err)
			}
			if _, err := ch.GetChannel(ctx, &v1.GetChannelRequest{Name: chName}); connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("deleted channel: %v", err)
			}
		})
	}
}

// TestOpenAPI checks the document lists every REST route and /docs serves
// a page that loads it.
func TestOpenAPI(t *testing.T) { inHTTPModes(t, testOpenAPI) }

func testOpenAPI(t *testing.T, mode ...nodetest.Option) {
	n := nodetest.Start(t, mode...)
	resp, err := http.Get(n.URL() + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for path, method := range map[string]string{
		"/api/channels": "post", "/api/channels/{channel}": "patch", "/api/channels/{channel}/files/": "post",
		"/api/channels/{channel}/upload/{filename}": "post", "/api/jobs/{id}/tasks": "get", "/get/{channel}/{path}": "get",
	} {
		op, ok := doc.Paths[path][method]
		if !ok {
			t.Errorf("openapi lacks %s %s", method, path)
			continue
		}
		if op["summary"] == "" {
			t.Errorf("%s %s has no summary", method, path)
		}
	}
	resp, err = http.Get(n.URL() + "/docs")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), `url: "/openapi.json"`) {
		t.Fatalf("/docs: %d %s", resp.StatusCode, page)
	}
}
