package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/conda/condatest"
)

// requestsUnder returns the URIs nginx logged below prefix, in order.
func requestsUnder(t *testing.T, ng *nginx, prefix string) []string {
	var out []string
	for _, l := range ng.requests(t) {
		f := strings.Fields(l)
		if len(f) == 3 && strings.HasPrefix(f[2], prefix) {
			out = append(out, strings.TrimPrefix(f[2], prefix))
		}
	}
	return out
}

// TestQuetzMirrorCases runs quetz-api.md §10 cases 23-29 and 35 against a
// real server and a real nginx upstream (the upstream's files are written
// per case, and its access log gives the request sequence).
func TestQuetzMirrorCases(t *testing.T) {
	ng := startNginxLogged(t, true)
	s := startServer(t, t.TempDir())
	mirror := func(name, upstreamDir, extra string) int64 {
		s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"%s","private":false,"mirror_channel_url":"%s/%s","mirror_mode":"mirror"%s}`, name, ng.url, upstreamDir, extra))
		return s.latestJob("synchronize_repodata").ID
	}
	write := func(rel, body string) { writeFile(t, filepath.Join(ng.root, rel), []byte(body)) }

	t.Run("23 actions [] makes no upstream request", func(t *testing.T) {
		write("c23/channeldata.json", `{"subdirs":[]}`)
		s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"c23","mirror_channel_url":"%s/c23","mirror_mode":"mirror","actions":[]}`, ng.url))
		var jobs struct {
			Result []jobJSON `json:"result"`
		}
		decodeJSON(t, s.mustDo(200, "GET", "/api/jobs?limit=-1&status=pending&status=running&status=success&status=failed", ""), &jobs)
		if len(jobs.Result) != 0 {
			t.Fatalf("jobs scheduled: %v", jobs.Result)
		}
		if got := requestsUnder(t, ng, "/c23/"); len(got) != 0 {
			t.Fatalf("upstream saw %v", got)
		}
	})

	t.Run("24 request sequence follows channeldata subdirs", func(t *testing.T) {
		write("c24/channeldata.json", `{"subdirs":["some-arch-1"]}`)
		s.waitJob(mirror("c24", "c24", `,"metadata":{"prefer_repodata_from_packages":true}`), 30*time.Second)
		want := []string{"channeldata.json", "noarch/repodata_from_packages.json", "noarch/repodata.json", "some-arch-1/repodata_from_packages.json", "some-arch-1/repodata.json"}
		if got := requestsUnder(t, ng, "/c24/"); !slices.Equal(got, want) {
			t.Fatalf("requests %v, want %v", got, want)
		}
	})

	t.Run("25 channeldata 404, HTML or {}", func(t *testing.T) {
		for _, tc := range []struct {
			name, body string
			want       int
		}{
			{"c25a", "", 1 + len(knownSubdirs())},
			{"c25b", "<html>not json</html>", 1 + len(knownSubdirs())},
			{"c25c", `{}`, 2}, // noarch is always mirrored
			{"c25d", `{"subdirs":["wonder-arch"]}`, 3},
		} {
			if tc.body != "" {
				write(tc.name+"/channeldata.json", tc.body)
			}
			s.waitJob(mirror(tc.name, tc.name, ""), 30*time.Second)
			if got := requestsUnder(t, ng, "/"+tc.name+"/"); len(got) != tc.want {
				t.Fatalf("%s: %d requests %v, want %d", tc.name, len(got), got, tc.want)
			}
		}
	})

	// An upstream with nrnpython and test-package 0.1/0.2.
	up := &upstreamChannel{dir: filepath.Join(ng.root, "btel"), files: map[string][]byte{}, recs: map[string][]conda.Record{}, about: map[string]map[string]any{}}
	for _, spec := range []condatest.Spec{
		{Name: "nrnpython", Version: "0.1", Build: "0", Subdir: "linux-64"},
		{Name: "test-package", Version: "0.1", Build: "0", Subdir: "linux-64"},
		{Name: "test-package", Version: "0.2", Build: "0", Subdir: "linux-64"},
	} {
		up.add(t, "linux-64", spec, ".tar.bz2")
	}
	up.write(t)

	t.Run("27 includelist and excludelist", func(t *testing.T) {
		s.waitJob(mirror("inc", "btel", `,"metadata":{"includelist":["nrnpython"]}`), 30*time.Second)
		if got := s.packageNames("inc"); !slices.Equal(got, []string{"nrnpython"}) {
			t.Fatalf("includelist: %v", got)
		}
		s.waitJob(mirror("exc", "btel", `,"metadata":{"excludelist":["nrnpython"]}`), 30*time.Second)
		if got := s.packageNames("exc"); !slices.Equal(got, []string{"test-package"}) {
			t.Fatalf("excludelist: %v", got)
		}
		code, body := s.do("POST", "/api/channels", adminKey, strings.NewReader(fmt.Sprintf(`{"name":"both","mirror_channel_url":"%s/btel","mirror_mode":"mirror","metadata":{"includelist":[],"excludelist":[]}}`, ng.url)))
		if code != 422 {
			t.Fatalf("both lists: %d %s", code, body)
		}
	})

	t.Run("26 a bad filename in upstream repodata publishes nothing", func(t *testing.T) {
		write("c26/channeldata.json", `{"subdirs":["linux-64"]}`)
		write("c26/linux-64/repodata.json", `{"info":{"subdir":"linux-64"},"packages":{"my_package-0.1.tar.bz":{"name":"my_package","version":"0.1","build":"0","build_number":0,"sha256":"00","size":1}}}`)
		s.waitJob(mirror("c26", "c26", ""), 30*time.Second)
		if got := s.packageNames("c26"); len(got) != 0 {
			t.Fatalf("packages %v, want none", got)
		}
	})

	t.Run("29 synchronize needs identity and a channel role", func(t *testing.T) {
		if code, _ := s.do("PUT", "/api/channels/inc/actions", "", strings.NewReader(`{"action":"synchronize"}`)); code != 401 {
			t.Fatalf("anonymous: %d", code)
		}
		var j jobJSON
		decodeJSON(t, s.mustDo(200, "PUT", "/api/channels/inc/actions", `{"action":"synchronize"}`), &j)
		s.waitJob(j.ID, 30*time.Second)
	})

	t.Run("35 proxylist redirects to the upstream", func(t *testing.T) {
		s.waitJob(mirror("plist", "btel", `,"metadata":{"proxylist":["nrnpython"]}`), 30*time.Second)
		s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"plist-proxy","private":false,"mirror_channel_url":"%s/btel","mirror_mode":"proxy","metadata":{"proxylist":["nrnpython"]}}`, ng.url))
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		for _, ch := range []string{"plist", "plist-proxy"} {
			resp, err := client.Get(s.url + "/get/" + ch + "/linux-64/nrnpython-0.1-0.tar.bz2")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 307 || resp.Header.Get("Location") != ng.url+"/btel/linux-64/nrnpython-0.1-0.tar.bz2" {
				t.Fatalf("%s: %d Location %q", ch, resp.StatusCode, resp.Header.Get("Location"))
			}
			resp, err = client.Get(s.url + "/get/" + ch + "/linux-64/test-package-0.2-0.tar.bz2")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s: a package not in the proxylist answered %d", ch, resp.StatusCode)
			}
		}
	})
}

func knownSubdirs() []string {
	return []string{"noarch", "linux-32", "linux-64", "linux-aarch64", "linux-armv6l", "linux-armv7l", "linux-ppc64",
		"linux-ppc64le", "linux-s390x", "osx-64", "osx-arm64", "win-32", "win-64", "zos-z"}
}
