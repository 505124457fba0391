package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/store"
)

type jobJSON struct {
	ID       int64  `json:"id"`
	Manifest string `json:"manifest"`
	Status   string `json:"status"`
}

type taskJSON struct {
	ID       int64  `json:"id"`
	Status   string `json:"status"`
	Message  string `json:"message"`
	Progress *struct {
		FilesTotal int64    `json:"files_total"`
		FilesDone  int64    `json:"files_done"`
		BytesTotal int64    `json:"bytes_total"`
		BytesDone  int64    `json:"bytes_done"`
		Errors     []string `json:"errors"`
	} `json:"progress"`
}

// latestJob returns the newest job with the manifest.
func (s *server) latestJob(manifest string) jobJSON {
	s.t.Helper()
	var page struct {
		Result []jobJSON `json:"result"`
	}
	decodeJSON(s.t, s.mustDo(200, "GET", "/api/jobs?limit=-1&status=pending&status=running&status=success&status=failed", ""), &page)
	var best jobJSON
	for _, j := range page.Result {
		if j.Manifest == manifest && j.ID > best.ID {
			best = j
		}
	}
	if best.ID == 0 {
		s.t.Fatalf("no %s job", manifest)
	}
	return best
}

// waitJob waits until job id has succeeded (or fails the test) and returns
// its last task.
func (s *server) waitJob(id int64, timeout time.Duration) taskJSON {
	s.t.Helper()
	var task taskJSON
	waitFor(s.t, timeout, fmt.Sprintf("job %d to finish", id), func() bool {
		var j jobJSON
		decodeJSON(s.t, s.mustDo(200, "GET", fmt.Sprintf("/api/jobs/%d", id), ""), &j)
		if j.Status == "failed" {
			s.t.Fatalf("job %d failed: %s", id, s.mustDo(200, "GET", fmt.Sprintf("/api/jobs/%d/tasks?status=failed", id), ""))
		}
		return j.Status == "success"
	})
	var tasks struct {
		Result []taskJSON `json:"result"`
	}
	decodeJSON(s.t, s.mustDo(200, "GET", fmt.Sprintf("/api/jobs/%d/tasks?status=success&limit=-1", id), ""), &tasks)
	if len(tasks.Result) > 0 {
		task = tasks.Result[len(tasks.Result)-1]
	}
	return task
}

func (s *server) packageNames(channel string) []string {
	var pkgs []struct {
		Name string `json:"name"`
	}
	decodeJSON(s.t, s.mustDo(200, "GET", "/api/channels/"+channel+"/packages", ""), &pkgs)
	var out []string
	for _, p := range pkgs {
		out = append(out, p.Name)
	}
	sort.Strings(out)
	return out
}

// TestMirrorChannel mirrors an nginx-served channel with the Quetz guide's
// request, checks progress, the package listing, rattler installs from the
// mirror with identical bytes, write refusal, and then an incremental
// re-sync picking up a new version, a changed file and (with pruning) a
// removed file, downloading only what changed.
func TestMirrorChannel(t *testing.T) {
	ng := startNginxLogged(t, true)
	up := newUpstreamChannel(t, filepath.Join(ng.root, "chan"), 60)
	s := startServer(t, t.TempDir())
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"mirror-channel","private":false,"mirror_channel_url":"%s/chan","mirror_mode":"mirror"}`, ng.url))
	task := s.waitJob(s.latestJob("synchronize_repodata").ID, 60*time.Second)
	if task.Progress == nil || task.Progress.FilesDone != int64(len(up.files)) || task.Progress.FilesTotal != int64(len(up.files)) || len(task.Progress.Errors) != 0 {
		t.Fatalf("sync progress %+v, want %d files done without errors", task.Progress, len(up.files))
	}
	names := s.packageNames("mirror-channel")
	if len(names) != 60 || names[0] != "lib000" {
		t.Fatalf("mirror lists %d packages (%v...), want 60", len(names), names[:min(3, len(names))])
	}
	sol, err := solve(t, []string{"lib059"}, []string{s.url + "/get/mirror-channel"}, []string{"linux-64", "noarch"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range sol {
		if body := download(t, p.URL); string(body) != string(up.files[p.Subdir+"/"+p.Filename]) {
			t.Fatalf("%s: mirrored bytes differ", p.Filename)
		}
	}
	// A mirror is read-only.
	if code, body := s.uploadMultipart("mirror-channel", map[string][]byte{"x-1-0.tar.bz2": up.files["linux-64/lib001-1.0-h0_0.tar.bz2"]}); code != 405 || !strings.Contains(string(body), "not implemented for mirror channels") {
		t.Fatalf("upload to a mirror: %d %s", code, body)
	}

	// Upstream changes: a new version, a changed file, a removed file.
	up.add(t, "noarch", condatest.Spec{Name: "lib000", Version: "2.0", Build: "h0_0", Noarch: "generic", Subdir: "noarch", Files: map[string]string{"v2": "2"}}, ".conda")
	changed := "linux-64/lib001-1.0-h0_0.tar.bz2"
	up.add(t, "linux-64", condatest.Spec{Name: "lib001", Version: "1.0", Build: "h0_0", Subdir: "linux-64", Depends: []string{"lib000 >=1.0"}, Files: map[string]string{"changed": "yes"}}, ".tar.bz2")
	removed := "noarch/lib003-1.0-h0_0.tar.bz2"
	up.remove("noarch", "lib003-1.0-h0_0.tar.bz2")
	up.write(t)
	s.mustDo(200, "PATCH", "/api/channels/mirror-channel", `{"metadata":{"prune":true}}`)
	before := len(ng.requests(t))
	// The CLI starts the sync and follows it to the end.
	out, err := s.cli("channel", "sync", "mirror-channel", "--wait")
	if err != nil || !strings.Contains(out, "2/2 files") || !strings.Contains(out, "succeeded") {
		t.Fatalf("condamesh channel sync --wait: %v\n%s", err, out)
	}
	task = s.waitJob(s.latestJob("synchronize_repodata").ID, 60*time.Second)
	if task.Progress == nil || task.Progress.FilesDone != 2 {
		t.Fatalf("incremental sync progress %+v, want 2 files", task.Progress)
	}
	var pkgFetches []string
	for _, l := range ng.requests(t)[before:] {
		if strings.HasSuffix(l, ".conda") || strings.HasSuffix(l, ".tar.bz2") {
			pkgFetches = append(pkgFetches, l)
		}
	}
	if len(pkgFetches) != 2 {
		t.Fatalf("incremental sync downloaded %v, want the 2 new or changed files", pkgFetches)
	}
	if got := download(t, s.url+"/get/mirror-channel/"+changed); sha256Hex(got) != up.sha(changed) {
		t.Fatal("changed file not updated")
	}
	if code, _ := s.do("GET", "/get/mirror-channel/"+removed, "", nil); code != 404 {
		t.Fatalf("pruned file still served: %d", code)
	}
	code, body := s.do("GET", "/get/mirror-channel/noarch/repodata.json", "", nil)
	if code != 200 || !strings.Contains(string(body), "lib000-2.0-h0_0.conda") || strings.Contains(string(body), "lib003-1.0") {
		t.Fatalf("mirror repodata after the re-sync is wrong")
	}
	// No change upstream: a re-sync downloads nothing.
	before = len(ng.requests(t))
	var j jobJSON
	decodeJSON(t, s.mustDo(200, "PUT", "/api/channels/mirror-channel/actions", `{"action":"synchronize_repodata"}`), &j)
	s.waitJob(j.ID, 60*time.Second)
	for _, l := range ng.requests(t)[before:] {
		if strings.HasSuffix(l, ".conda") || strings.HasSuffix(l, ".tar.bz2") {
			t.Fatalf("no-change re-sync downloaded %s", l)
		}
	}
}

// TestMirrorFaults: a file whose bytes do not match the upstream repodata
// is rejected and reported on the task while the rest is published; an
// HTML channeldata.json falls back to the known subdirs.
func TestMirrorFaults(t *testing.T) {
	ng := startNginxLogged(t, true)
	up := newUpstreamChannel(t, filepath.Join(ng.root, "chan"), 12)
	bad := "linux-64/lib001-1.0-h0_0.tar.bz2"
	writeFile(t, filepath.Join(up.dir, bad), []byte("these are not the bytes the repodata promises"))
	writeFile(t, filepath.Join(up.dir, "channeldata.json"), []byte("<html><body>Welcome</body></html>"))
	s := startServer(t, t.TempDir())
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"faulty","private":false,"mirror_channel_url":"%s/chan","mirror_mode":"mirror"}`, ng.url))
	task := s.waitJob(s.latestJob("synchronize_repodata").ID, 60*time.Second)
	if task.Progress == nil || len(task.Progress.Errors) != 1 || !strings.Contains(task.Progress.Errors[0], "lib001-1.0-h0_0.tar.bz2") {
		t.Fatalf("task errors %+v, want exactly the corrupt file", task.Progress)
	}
	if code, _ := s.do("GET", "/get/faulty/"+bad, "", nil); code != 404 {
		t.Fatalf("corrupt file is served: %d", code)
	}
	if got := download(t, s.url+"/get/faulty/osx-arm64/lib001-1.0-h0_0.tar.bz2"); sha256Hex(got) != up.sha("osx-arm64/lib001-1.0-h0_0.tar.bz2") {
		t.Fatal("good file not mirrored")
	}
	// HTML channeldata: every known subdir was tried.
	if ng.count(t, "/chan/win-64/repodata.json") != 1 || ng.count(t, "/chan/zos-z/repodata.json") != 1 {
		t.Fatal("known subdirs not tried after an invalid channeldata.json")
	}
}

// delayProxy forwards TCP connections to target and holds back each HTTP
// response from the upstream for delay: a slow upstream for tests. The
// delay is per response, not per read, so that pipelined responses, which
// arrive together, are slow too.
func delayProxy(t testing.TB, target string, delay time.Duration) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				buf := make([]byte, 32<<10)
				for {
					n, err := u.Read(buf)
					for rest := buf[:n]; len(rest) > 0; {
						// One response at a time: the piece up to the
						// next status line.
						next := bytes.Index(rest[1:], []byte("HTTP/1.1 "))
						piece := rest
						if next >= 0 {
							piece = rest[:next+1]
						}
						if bytes.HasPrefix(piece, []byte("HTTP/1.1 ")) {
							time.Sleep(delay)
						}
						if _, werr := c.Write(piece); werr != nil {
							return
						}
						rest = rest[len(piece):]
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// TestMirrorResumesAfterKill kills the server (SIGKILL) in the middle of a
// sync over a slow link, restarts it, and checks the sync completes without
// downloading any verified file a second time and without publishing
// anything partial.
func TestMirrorResumesAfterKill(t *testing.T) {
	ng := startNginxLogged(t, true)
	up := newUpstreamChannel(t, filepath.Join(ng.root, "chan"), 90)
	slow := delayProxy(t, strings.TrimPrefix(ng.url, "http://"), 150*time.Millisecond)
	dir := t.TempDir()
	s := startServer(t, dir)
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"resume","private":false,"mirror_channel_url":"http://%s/chan","mirror_mode":"mirror"}`, slow))
	job := s.latestJob("synchronize_repodata")
	// Kill once the running task reports a good part of the files done
	// (progress is written about every second, so by then the first files
	// have long been made durable).
	waitFor(t, 60*time.Second, "sync half done", func() bool {
		var tasks struct {
			Result []taskJSON `json:"result"`
		}
		decodeJSON(t, s.mustDo(200, "GET", fmt.Sprintf("/api/jobs/%d/tasks?status=running", job.ID), ""), &tasks)
		return len(tasks.Result) == 1 && tasks.Result[0].Progress != nil && tasks.Result[0].Progress.FilesDone >= 40
	})
	s.kill()
	verified := storedBlobs(t, dir) // what the killed server had verified and kept
	restarted := time.Now()
	s2 := startServer(t, dir)
	checkStoreIntegrity(t, dir, restarted)
	task := s2.waitJob(job.ID, 120*time.Second)
	if task.Progress == nil || len(task.Progress.Errors) != 0 {
		t.Fatalf("resumed sync: %+v", task.Progress)
	}
	kept := 0
	for p := range up.files {
		if !verified[cidOf(up.files[p])] {
			continue
		}
		kept++
		if n := ng.count(t, "/chan/"+p); n != 1 {
			t.Fatalf("%s downloaded %d times: the resumed sync fetched a verified file again", p, n)
		}
	}
	if kept == 0 {
		t.Fatal("the kill came before any file was verified; the test proves nothing")
	}
	for p := range up.files {
		if got := download(t, s2.url+"/get/resume/"+p); sha256Hex(got) != up.sha(p) {
			t.Fatalf("%s: wrong bytes after the resumed sync", p)
		}
	}
}

// storedBlobs opens a stopped server's store and lists its blobs.
func storedBlobs(t *testing.T, dataDir string) map[string]bool {
	st, err := store.Open(context.Background(), store.Config{Dir: filepath.Join(dataDir, "store")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out := map[string]bool{}
	if err := st.List(context.Background(), func(b store.BlobInfo) error { out[b.CID.String()] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPeriodicMirrorSync: with metadata.sync_interval_seconds the mirror
// follows its upstream on its own.
func TestPeriodicMirrorSync(t *testing.T) {
	ng := startNginxLogged(t, true)
	up := newUpstreamChannel(t, filepath.Join(ng.root, "chan"), 6)
	s := startServer(t, t.TempDir())
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"follow","private":false,"mirror_channel_url":"%s/chan","mirror_mode":"mirror","metadata":{"sync_interval_seconds":1}}`, ng.url))
	waitFor(t, 30*time.Second, "first sync", func() bool { return len(s.packageNames("follow")) == 6 })
	up.add(t, "noarch", condatest.Spec{Name: "latecomer", Version: "1.0", Build: "0", Noarch: "generic"}, ".conda")
	up.write(t)
	waitFor(t, 30*time.Second, "the new upstream package to be mirrored", func() bool {
		return slices.Contains(s.packageNames("follow"), "latecomer")
	})
	var j struct {
		RepeatEverySeconds *int64 `json:"repeat_every_seconds"`
	}
	decodeJSON(t, s.mustDo(200, "GET", fmt.Sprintf("/api/jobs/%d", s.latestJob("synchronize_repodata").ID), ""), &j)
	if j.RepeatEverySeconds == nil || *j.RepeatEverySeconds != 1 {
		t.Fatalf("sync job repeat_every_seconds = %v, want 1", j.RepeatEverySeconds)
	}
}
