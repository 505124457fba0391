package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestMirrorRegistryTwoProcesses: two real condamesh processes on loopback.
// The second creates a mirror channel of the first with register_mirror=true
// (Quetz's guide), the primary lists it, clients install from the mirror,
// and the primary's synchronize_metrics reaches the mirror's metrics
// endpoint. (Counting of closed hours with a controlled clock is tested on
// two in-process nodes: api.TestRegisterMirrorBetweenNodes.)
func TestMirrorRegistryTwoProcesses(t *testing.T) {
	primary := startServer(t, t.TempDir())
	mirror := startServer(t, t.TempDir())
	primary.mustDo(201, "POST", "/api/channels", `{"name":"my-channel","private":false}`)
	pkgs := testPackages(t)
	multi := map[string][]byte{}
	for p, b := range pkgs {
		multi[p[strings.Index(p, "/")+1:]] = b
	}
	if code, body := primary.uploadMultipart("my-channel", multi); code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	code, body := mirror.do("POST", "/api/channels?register_mirror=true&mirror_api_key="+adminKey, adminKey,
		strings.NewReader(fmt.Sprintf(`{"name":"mirror-channel","private":false,"mirror_channel_url":"%s/get/my-channel","mirror_mode":"mirror"}`, primary.url)))
	if code != 201 {
		t.Fatalf("create mirror with register_mirror: %d %s", code, body)
	}
	var mirrors []map[string]string
	decodeJSON(t, primary.mustDo(200, "GET", "/api/channels/my-channel/mirrors", ""), &mirrors)
	if len(mirrors) != 1 || mirrors[0]["url"] != mirror.url+"/get/mirror-channel" ||
		mirrors[0]["api_endpoint"] != mirror.url+"/api/channels/mirror-channel" || mirrors[0]["metrics_endpoint"] != mirror.url+"/metrics/channels/mirror-channel" {
		t.Fatalf("primary's mirrors: %v", mirrors)
	}
	mirror.waitJob(mirror.latestJob("synchronize_repodata").ID, 60*time.Second)
	sol, err := solve(t, []string{"foo"}, []string{mirror.url + "/get/mirror-channel"}, []string{"linux-64", "noarch"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range sol {
		if got := download(t, p.URL); string(got) != string(pkgs[p.Subdir+"/"+p.Filename]) {
			t.Fatalf("%s: mirror serves different bytes", p.Filename)
		}
	}
	var j jobJSON
	decodeJSON(t, primary.mustDo(200, "PUT", "/api/channels/my-channel/actions", `{"action":"synchronize_metrics"}`), &j)
	task := primary.waitJob(j.ID, 60*time.Second)
	if task.Progress == nil || task.Progress.FilesDone != 1 || len(task.Progress.Errors) != 0 {
		t.Fatalf("synchronize_metrics: %+v", task.Progress)
	}
	// The mirror itself refuses to pull metrics (only local channels do).
	if code, _ := mirror.do("PUT", "/api/channels/mirror-channel/actions", adminKey, strings.NewReader(`{"action":"synchronize_metrics"}`)); code != 405 {
		t.Fatalf("synchronize_metrics on a mirror: %d", code)
	}
}
