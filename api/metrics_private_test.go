package api_test

import (
	"fmt"
	"github.com/condamesh/condamesh/node/nodetest"
	"net/http"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node"
)

const scrapeToken = "scrape-token-0123456789"

// TestMetricsHidePrivateChannels: /metrics and /metricsp name private
// channels only to scrapers with the token or an elevated key; others see
// their downloads summed under channel="_private".
func TestMetricsHidePrivateChannels(t *testing.T) { inHTTPModes(t, testMetricsHidePrivateChannels) }

func testMetricsHidePrivateChannels(t *testing.T, mode ...nodetest.Option) {
	e := startIn(t, mode, func(c *node.Config) { c.API.MetricsToken = scrapeToken })
	member := e.newUser(t, "viewer", "")
	e.newChannel(t, "pub-m", false, admin)
	e.newChannel(t, "hidden-m", true, admin)
	e.newChannel(t, "hidden-n", true, admin)
	e.addMember(t, "hidden-m", "viewer", "member")
	for _, ch := range []string{"pub-m", "hidden-m", "hidden-n"} {
		spec := condatest.Spec{Name: "p", Version: "1", Build: "0", Subdir: "linux-64"}
		fn := condatest.Filename(spec, ".conda")
		e.upload(t, admin, ch, fn, condatest.Conda(t, spec)).want(t, 201)
		e.get(t, "/get/"+ch+"/linux-64/"+fn, admin).want(t, 200)
	}
	hidden := `condamesh_downloads_total{channel="_private",platform="linux-64"} 2`
	for _, c := range []struct {
		who  string
		h    hdr
		full bool
	}{
		{"anonymous", nil, false},
		{"channel member", hdr{"X-API-Key": member}, false},
		{"wrong token", hdr{"Authorization": "Bearer not-the-scrape-token"}, false},
		{"scrape token", hdr{"Authorization": "Bearer " + scrapeToken}, true},
		{"server owner", hdr{"X-API-Key": admin}, true},
	} {
		for _, path := range []string{"/metrics", "/metricsp"} {
			text := string(e.do(t, "GET", path, "", nil, c.h).want(t, 200).body)
			if !strings.Contains(text, `condamesh_downloads_total{channel="pub-m",platform="linux-64"} 1`) {
				t.Fatalf("%s %s: public channel's series missing", c.who, path)
			}
			shows := strings.Contains(text, "hidden-m") || strings.Contains(text, "hidden-n")
			if shows != c.full {
				t.Errorf("%s %s: private channel names shown=%v, want %v", c.who, path, shows, c.full)
			}
			if !c.full && !strings.Contains(text, hidden) {
				t.Errorf("%s %s: lacks %s", c.who, path, hidden)
			}
		}
	}
}

// TestMetricsPlatformBounded: with a proxylist, every path of a listed
// package is redirected; the downloads' platform label keeps only subdirs
// conda knows (the rest count as "other"), and paths that cannot be a
// subdir are not counted.
func TestMetricsPlatformBounded(t *testing.T) { inHTTPModes(t, testMetricsPlatformBounded) }

func testMetricsPlatformBounded(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	e.do(t, "POST", "/api/channels", admin, map[string]any{
		"name": "plist", "private": false, "mirror_channel_url": "http://127.0.0.1:1/up", "mirror_mode": "proxy",
		"metadata": map[string]any{"proxylist": []string{"foo"}},
	}, nil).want(t, http.StatusCreated)
	for i, dir := range []string{"linux-64", "rnd-1", "rnd-2", "rnd-3", "deep/er", "x/y/z"} {
		e.get(t, fmt.Sprintf("/get/plist/%s/foo-1-%d.conda", dir, i), "").want(t, http.StatusTemporaryRedirect)
	}
	text := string(e.get(t, "/metrics", admin).want(t, 200).body)
	for _, want := range []string{
		`condamesh_downloads_total{channel="plist",platform="linux-64"} 1`,
		`condamesh_downloads_total{channel="plist",platform="other"} 3`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, junk := range []string{"rnd-", "deep", "x/y"} {
		if strings.Contains(text, `platform="`+junk) {
			t.Errorf("/metrics has a platform label from a client's path %q", junk)
		}
	}
}
