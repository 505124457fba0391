package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/conda/condatest"
)

// TestProxyServesOnlyWhatTheUpstreamPromised runs a proxy of an nginx
// channel through the attacks of issue #9: a corrupt package asked before
// its index was cached never reaches a client whole and is not kept; a file
// the upstream serves but its repodata.json does not list is a 404 that
// costs no upstream request; a package rebuilt under the same file name is
// served with its new bytes once the proxy's index has its new record; and
// 1,000 random paths the upstream does not have make at most one upstream
// request each, none when asked again.
func TestProxyServesOnlyWhatTheUpstreamPromised(t *testing.T) {
	ng := startNginxLogged(t, true)
	up := newUpstreamChannel(t, ng.root+"/chan", 6)
	s := startServer(t, t.TempDir())
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"px","private":false,"mirror_channel_url":"%s/chan","mirror_mode":"proxy"}`, ng.url))
	s.mustDo(200, "PATCH", "/api/channels/px", `{"ttl": 1}`)
	var pkgs []string
	for p := range up.files {
		if strings.HasPrefix(p, "linux-64/") {
			pkgs = append(pkgs, p)
		}
	}
	sort.Strings(pkgs)
	victim, rebuilt := pkgs[0], pkgs[1]

	// Corrupt bytes, before the proxy has the subdir's index.
	good := up.files[victim]
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0xff
	ng.put(t, "chan/"+victim, bad)
	if resp, err := http.Get(s.url + "/get/px/" + victim); err == nil { // else: cut short before the head went out
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && err == nil && len(body) == len(bad) {
			t.Fatal("a corrupt package reached the client whole")
		}
	}
	ng.put(t, "chan/"+victim, good)
	if got := download(t, s.url+"/get/px/"+victim); !bytes.Equal(got, good) {
		t.Fatal("the corrupt copy was kept")
	}

	// A file the upstream has but does not list.
	ng.put(t, "chan/linux-64/unlisted-1.0-h0_0.conda", good)
	if code, _ := s.do("GET", "/get/px/linux-64/unlisted-1.0-h0_0.conda", "", nil); code != 404 {
		t.Fatalf("unlisted file: %d, want 404", code)
	}
	if n := ng.count(t, "/chan/linux-64/unlisted-1.0-h0_0.conda"); n != 0 {
		t.Fatalf("an unlisted file was asked from the upstream %d times", n)
	}

	// A package rebuilt under the same file name.
	old := download(t, s.url+"/get/px/"+rebuilt)
	fn, err := conda.ParseFilename(strings.TrimPrefix(rebuilt, "linux-64/"))
	if err != nil {
		t.Fatal(err)
	}
	up.add(t, "linux-64", condatest.Spec{Name: fn.Name, Version: fn.Version, Build: fn.Build, Subdir: "linux-64",
		Files: map[string]string{"share/rebuilt.txt": "rebuilt\n"}}, fn.Ext)
	up.write(t)
	fresh := up.files[rebuilt]
	if bytes.Equal(fresh, old) {
		t.Fatal("the rebuild made the same bytes")
	}
	waitFor(t, 20*time.Second, "the rebuilt package", func() bool {
		s.do("GET", "/get/px/linux-64/repodata.json", "", nil) // past the TTL: revalidated in the background
		code, b := s.do("GET", "/get/px/"+rebuilt, "", nil)
		if code == 200 && !bytes.Equal(b, fresh) && !bytes.Equal(b, old) {
			t.Fatalf("served bytes of neither version")
		}
		return code == 200 && bytes.Equal(b, fresh)
	})

	// 1,000 random paths.
	var paths []string
	for i := range 1000 {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		r := hex.EncodeToString(b)
		paths = append(paths, []string{"linux-64/p" + r + "-1.0-0.conda", "s" + r + "/repodata.json",
			"linux-64/" + strings.Repeat(r, 400) + ".conda", "linux-64/x" + r + "%3F.conda"}[i%4])
	}
	for round := range 2 {
		before := len(ng.requests(t))
		for _, p := range paths {
			if code, _ := s.do("GET", "/get/px/"+p, "", nil); code != 404 {
				t.Fatalf("%.60s: %d, want 404", p, code)
			}
		}
		made := len(ng.requests(t)) - before
		if (round == 0 && made > 250) || (round == 1 && made != 0) {
			t.Fatalf("round %d: %d upstream requests for %d random paths", round, made, len(paths))
		}
	}
}
