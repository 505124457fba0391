package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/condamesh/condamesh/node/nodetest"
)

// recordingUpstream is an upstream channel at /c that has only
// linux-64/repodata.json (empty) and records every request it receives.
type recordingUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string // request target, then " auth" when Authorization was sent
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	u := &recordingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		s := r.RequestURI
		if r.Header.Get("Authorization") != "" {
			s += " auth"
		}
		u.seen = append(u.seen, s)
		u.mu.Unlock()
		if r.URL.Path == "/c/linux-64/repodata.json" && r.URL.RawQuery == "" {
			_, _ = w.Write([]byte(`{"info":{"subdir":"linux-64"},"packages":{},"packages.conda":{}}`))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *recordingUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

// TestProxyForwardsDecodedCheckedPaths: the upstream receives a proxy
// channel's path decoded once, checked and escaped again, never a query
// made from an escaped "?", a path that the upstream decodes into "../",
// or any path that cannot be a conda file (with the channel's credentials
// or without).
func TestProxyForwardsDecodedCheckedPaths(t *testing.T) {
	inHTTPModes(t, testProxyForwardsDecodedCheckedPaths)
}

func testProxyForwardsDecodedCheckedPaths(t *testing.T, mode ...nodetest.Option) {
	up := newRecordingUpstream(t)
	e := start(t, mode...)
	e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "px", "private": false, "mirror_channel_url": up.URL + "/c",
		"mirror_mode": "proxy", "metadata": map[string]any{"upstream_authorization": "Bearer SECRET"}}, nil).want(t, 201)
	e.get(t, "/get/px/linux-64/repodata.json", "").want(t, 200)
	for _, p := range []string{
		"linux-64/x%3Fy.conda",
		"linux-64/pkg-1.0-0.conda%3Fx=1",
		"linux-64/%252e%252e%252fsecret",
		"linux-64/%252e%252e%252f%252e%252e%252fsecret.json",
		"linux-64/..%2f..%2fsecret",
		"linux-64%2f..%2f..%2fsecret/repodata.json",
		"noarch/a%23b.json",
		"linux-64/repodata.json%3Fsig=1",
	} {
		e.get(t, "/get/px/"+p, "").want(t, 404)
	}
	for _, s := range up.requests() {
		target, _, _ := strings.Cut(s, " ")
		path, err := url.PathUnescape(target)
		if strings.ContainsAny(target, "?#") || err != nil || strings.Contains(path, "..") || strings.Contains(path, "%") {
			t.Errorf("the upstream received %q", s)
		}
	}
	if got := up.requests(); len(got) != 1 || got[0] != "/c/linux-64/repodata.json auth" {
		t.Errorf("upstream requests %q, want only the index (with credentials)", got)
	}
}

// TestProxyNotFoundLeavesRaftLog: 1,000 random paths a public proxy's
// upstream does not have leave the Raft log as it was (404s are remembered
// on the node only), and asking them again makes no upstream request.
func TestProxyNotFoundLeavesRaftLog(t *testing.T) { inHTTPModes(t, testProxyNotFoundLeavesRaftLog) }

func testProxyNotFoundLeavesRaftLog(t *testing.T, mode ...nodetest.Option) {
	up := newRecordingUpstream(t)
	e := start(t, mode...)
	e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "px", "private": false, "mirror_channel_url": up.URL + "/c", "mirror_mode": "proxy"}, nil).want(t, 201)
	e.get(t, "/get/px/linux-64/repodata.json", "").want(t, 200)
	ctx := context.Background()
	applied := func() uint64 {
		i, err := e.n.Store().AppliedIndex(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	before := applied()
	var paths []string
	for i := range 1000 {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		r := hex.EncodeToString(b)
		switch i % 4 {
		case 0:
			paths = append(paths, fmt.Sprintf("linux-64/p%s-1.0-0.conda", r))
		case 1:
			paths = append(paths, fmt.Sprintf("s%s/repodata.json", r))
		case 2:
			paths = append(paths, "linux-64/"+strings.Repeat(r, 400)+".tar.bz2")
		case 3:
			paths = append(paths, fmt.Sprintf("noarch/%s.json", r))
		}
	}
	for round := range 2 {
		n := len(up.requests())
		for _, p := range paths {
			e.get(t, "/get/px/"+p, "").want(t, 404)
		}
		if after := applied(); after != before {
			t.Fatalf("applied index went from %d to %d: 404s were replicated", before, after)
		}
		made := len(up.requests()) - n
		if round == 0 && made > 250 {
			t.Fatalf("%d upstream requests for %d paths, want at most 250 (the missing subdirs' repodata.json)", made, len(paths))
		}
		if round == 1 && made != 0 {
			t.Fatalf("%d upstream requests when asked again", made)
		}
	}
}

// TestProxyRevalidatedZstIsStreamed: a revalidation of a repodata.json.zst
// the proxy has not made yet is answered at once with the stream of its
// compression (no ETag: 200 answers any revalidation), not after it; once
// the stored file is there, its ETag revalidates to 304.
func TestProxyRevalidatedZstIsStreamed(t *testing.T) {
	inHTTPModes(t, testProxyRevalidatedZstIsStreamed)
}

func testProxyRevalidatedZstIsStreamed(t *testing.T, mode ...nodetest.Option) {
	up := newRecordingUpstream(t)
	e := start(t, mode...)
	var path string
	for i, h := range []hdr{{"If-None-Match": `"an-older-copy"`}, {"If-Modified-Since": "Mon, 02 Jan 2006 15:04:05 GMT"}} {
		name := fmt.Sprintf("pxz%d", i) // a cold proxy channel each
		e.do(t, "POST", "/api/channels", admin, map[string]any{"name": name, "private": false, "mirror_channel_url": up.URL + "/c", "mirror_mode": "proxy"}, nil).want(t, 201)
		path = "/get/" + name + "/linux-64/repodata.json.zst"
		r := e.do(t, "GET", path, "", nil, h).want(t, 200)
		if r.header.Get("ETag") != "" || r.header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("%v: ETag %q, Cache-Control %q: answered from a stored file, not streamed", h, r.header.Get("ETag"), r.header.Get("Cache-Control"))
		}
		d, _ := zstd.NewReader(nil)
		got, err := d.DecodeAll(r.body, nil)
		d.Close()
		if err != nil || !bytes.Equal(got, []byte(`{"info":{"subdir":"linux-64"},"packages":{},"packages.conda":{}}`)) {
			t.Fatalf("%v: the stream decodes to %q (%v)", h, got, err)
		}
	}
	var tag string
	nodetest.Eventually(t, 20*time.Second, "a stored .zst", func() bool {
		tag = e.get(t, path, "").want(t, 200).header.Get("ETag")
		return tag != ""
	})
	e.do(t, "GET", path, "", nil, hdr{"If-None-Match": tag}).want(t, 304)
}
