package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda"
)

// TestProxyChannel proxies an upstream channel served by nginx: rattler
// solves and downloads through the proxy (using shards the proxy derives,
// since the upstream has none), bytes match the upstream, cached files cost
// no upstream request, concurrent misses make one, 404s stay 404s, and when
// the upstream goes down cached files are still served (stale index files
// with Age and Warning) while uncached ones get 502.
func TestProxyChannel(t *testing.T) {
	ng := startNginxLogged(t, true)
	up := newUpstreamChannel(t, ng.root+"/chan", 120)
	s := startServer(t, t.TempDir())
	// The request of the Quetz mirroring guide, unchanged.
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"proxy-channel","private":false,"mirror_channel_url":"%s/chan","mirror_mode":"proxy"}`, ng.url))

	for _, platform := range []string{"linux-64", "osx-arm64"} {
		sol, err := solve(t, []string{"lib119"}, []string{s.url + "/get/proxy-channel"}, []string{platform, "noarch"})
		if err != nil {
			t.Fatal(err)
		}
		if len(sol) < 5 {
			t.Fatalf("%s: solved only %d packages", platform, len(sol))
		}
		for _, p := range sol {
			body := download(t, p.URL)
			if want := up.files[p.Subdir+"/"+p.Filename]; string(body) != string(want) || sha256Hex(body) != p.SHA256 {
				t.Fatalf("%s: proxied bytes differ from the upstream", p.Filename)
			}
		}
	}
	if n := ng.count(t, "/chan/noarch/repodata.json"); n != 1 {
		t.Fatalf("upstream noarch/repodata.json fetched %d times, want 1 (derived shards and zst come from it)", n)
	}
	for _, p := range []string{"/chan/noarch/repodata_shards.msgpack.zst", "/chan/linux-64/repodata.json.zst"} {
		code, _ := s.do("GET", "/get/proxy-channel/"+strings.TrimPrefix(p, "/chan/"), "", nil)
		if code != 200 {
			t.Fatalf("derived %s: %d", p, code)
		}
	}

	// The .zst asked its upstream whether it publishes one (a 404): nginx
	// logs a request after answering it, so wait for that line before
	// counting.
	waitFor(t, 10*time.Second, "nginx's log of the upstream .zst probe", func() bool {
		return ng.count(t, "/chan/linux-64/repodata.json.zst") >= 1
	})

	// Cached: a second solve makes no upstream request at all.
	before := len(ng.requests(t))
	if _, err := solve(t, []string{"lib119"}, []string{s.url + "/get/proxy-channel"}, []string{"linux-64", "noarch"}); err != nil {
		t.Fatal(err)
	}
	if reqs := ng.requests(t); len(reqs) != before {
		t.Fatalf("second solve made %d upstream requests, want 0: %v", len(reqs)-before, reqs[before:])
	}

	// 100 concurrent cold requests for one file: one upstream request.
	cold := "linux-64/lib001-1.0-h0_0.tar.bz2"
	var wg sync.WaitGroup
	codes := make(chan int, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(s.url + "/get/proxy-channel/" + cold)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("concurrent cold request answered %d", c)
		}
	}
	waitFor(t, 10*time.Second, "nginx's log of the cold download", func() bool { return ng.count(t, "/chan/"+cold) >= 1 })
	if n := ng.count(t, "/chan/"+cold); n != 1 {
		t.Fatalf("100 concurrent cold requests made %d upstream requests, want 1", n)
	}

	// Upstream 404 -> 404, never 500.
	if code, body := s.do("GET", "/get/proxy-channel/linux-64/nope-1.0-0.conda", "", nil); code != 404 {
		t.Fatalf("missing upstream file: %d %s", code, body)
	}

	// Upstream down: cached files still served; index files past the TTL
	// are served stale with Age and Warning; uncached files get 502.
	if b := s.mustDo(200, "PATCH", "/api/channels/proxy-channel", `{"ttl": 1}`); !strings.Contains(string(b), `"ttl":1`) {
		t.Fatalf("PATCH ttl on a proxy: %s", b)
	}
	ng.stop()
	if got := download(t, s.url+"/get/proxy-channel/"+cold); string(got) != string(up.files[cold]) {
		t.Fatal("cached package not served with the upstream down")
	}
	var stale *http.Response
	waitFor(t, 20*time.Second, "stale repodata with a Warning", func() bool {
		resp, err := http.Get(s.url + "/get/proxy-channel/noarch/repodata.json")
		if err != nil {
			return false
		}
		resp.Body.Close()
		stale = resp
		return resp.StatusCode == 200 && resp.Header.Get("Warning") != ""
	})
	if stale.Header.Get("Age") == "" {
		t.Fatal("stale response without Age")
	}
	if code, body := s.do("GET", "/get/proxy-channel/linux-64/lib002-1.0-h0_0.conda", "", nil); code != 502 && code != 504 {
		t.Fatalf("uncached file with the upstream down: %d %s", code, body)
	}
}

// TestProxyUpstreamShards proxies an upstream (nginx) that publishes
// sharded repodata, as conda-forge does: rattler solves through the proxy
// with the upstream's shards and downloads every package it chose, each
// checked against its record in the upstream's shard of its name, so the
// upstream repodata.json (315 MB for conda-forge's linux-64) is never
// fetched. linux-64's shards are in shards/ (rattler-index), noarch's
// beside the index (conda-index): both are served where the index says. A
// classic client asking for repodata.json afterwards still gets the
// upstream's.
func TestProxyUpstreamShards(t *testing.T) {
	ng := startNginxLogged(t, true)
	up := newUpstreamChannel(t, ng.root+"/chan", 40)
	up.writeShards(t, map[string]string{"noarch": ""}) // noarch's beside its index, as conda-index puts them
	s := startServer(t, t.TempDir())
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"px","private":false,"mirror_channel_url":"%s/chan","mirror_mode":"proxy"}`, ng.url))
	sol, fetched, err := solveWith(t, solveOptions{}, []string{"lib039"}, []string{s.url + "/get/px"}, []string{"linux-64", "noarch"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(fetched, func(u string) bool { return strings.HasSuffix(u, "/linux-64/repodata_shards.msgpack.zst") }) {
		t.Fatalf("rattler did not read the shard index: %v", fetched)
	}
	if len(sol) < 3 {
		t.Fatalf("solved only %d packages", len(sol))
	}
	for _, p := range sol {
		body := download(t, p.URL)
		if want := up.files[p.Subdir+"/"+p.Filename]; string(body) != string(want) || sha256Hex(body) != p.SHA256 {
			t.Fatalf("%s: proxied bytes differ from the upstream", p.Filename)
		}
	}
	last := "/chan/" + sol[len(sol)-1].Subdir + "/" + sol[len(sol)-1].Filename
	waitFor(t, 10*time.Second, "nginx's log of the last download", func() bool { return ng.count(t, last) >= 1 })
	for _, sd := range []string{"linux-64", "noarch"} {
		if n := ng.count(t, "/chan/"+sd+"/repodata.json"); n != 0 {
			t.Fatalf("upstream %s/repodata.json fetched %d times, want 0 (records come from the upstream's shards)", sd, n)
		}
	}
	if got := download(t, s.url+"/get/px/linux-64/repodata.json"); string(got) != string(conda.Repodata("linux-64", up.recs["linux-64"])) {
		t.Fatal("repodata.json through the proxy differs from the upstream's")
	}
}
