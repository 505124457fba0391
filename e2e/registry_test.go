package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/node/nodetest"
)

// TestMirrorRegistryTwoProcesses: two real condamesh processes on loopback.
// The second creates a mirror channel of the first with register_mirror=true
// (Quetz's guide), the primary lists it, clients install from the mirror,
// and the primary's synchronize_metrics brings those downloads into its
// metrics exactly once: with the mirror down for one run, and when run
// twice. The mirror runs two hours behind (--clock-offset) so that its
// downloads fall in hours the primary considers closed.
func TestMirrorRegistryTwoProcesses(t *testing.T) {
	primary := startServer(t, t.TempDir())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mirrorAddr := l.Addr().String()
	l.Close()
	mirrorDir := t.TempDir()
	mirrorArgs := []string{"--http-addr", mirrorAddr, "--clock-offset", "-2h"}
	mirror := startServerArgs(t, mirrorDir, mirrorArgs...)
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
	t0 := time.Now().UTC()
	sol, err := solve(t, []string{"foo"}, []string{mirror.url + "/get/mirror-channel"}, []string{"linux-64", "noarch"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range sol {
		if got := download(t, p.URL); string(got) != string(pkgs[p.Subdir+"/"+p.Filename]) {
			t.Fatalf("%s: mirror serves different bytes", p.Filename)
		}
	}
	// The mirror itself refuses to pull metrics (only local channels do).
	if code, _ := mirror.do("PUT", "/api/channels/mirror-channel/actions", adminKey, strings.NewReader(`{"action":"synchronize_metrics"}`)); code != 405 {
		t.Fatalf("synchronize_metrics on a mirror: %d", code)
	}
	// The mirror's hours of these downloads (two hours behind), even if an
	// hour ended while the test ran.
	t1 := time.Now().UTC()
	window := "?period=H&start=" + t0.Add(-2*time.Hour).Truncate(time.Hour).Format("2006-01-02T15:04") +
		"&end=" + t1.Add(-time.Hour).Truncate(time.Hour).Format("2006-01-02T15:04")
	mirrored := func(s *server, channel string) int64 {
		n, err := nodetest.DownloadSum(s.mustDo(200, "GET", "/metrics/channels/"+channel+window, ""))
		if err != nil {
			t.Fatalf("metrics of %s: %v", channel, err)
		}
		return n
	}
	mirror.stop() // flushes the mirror's counts; the mirror is down for the next pull
	sync := func() taskJSON {
		var j jobJSON
		decodeJSON(t, primary.mustDo(200, "PUT", "/api/channels/my-channel/actions", `{"action":"synchronize_metrics"}`), &j)
		return primary.waitJob(j.ID, 60*time.Second)
	}
	if task := sync(); task.Progress == nil || len(task.Progress.Errors) != 1 {
		t.Fatalf("pull with the mirror down: %+v, want one error", task.Progress)
	}
	if n := mirrored(primary, "my-channel"); n != 0 {
		t.Fatalf("counted %d with the mirror down", n)
	}
	mirror = startServerArgs(t, mirrorDir, mirrorArgs...)
	if n := mirrored(mirror, "mirror-channel"); n != int64(len(sol)) {
		t.Fatalf("the mirror counted %d downloads, want %d", n, len(sol))
	}
	for range 2 {
		if task := sync(); task.Progress == nil || len(task.Progress.Errors) != 0 {
			t.Fatalf("pull: %+v", task.Progress)
		}
		if n := mirrored(primary, "my-channel"); n != int64(len(sol)) {
			t.Fatalf("primary counted %d of the mirror's downloads, want exactly %d", n, len(sol))
		}
	}
}
