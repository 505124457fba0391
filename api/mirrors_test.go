package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
)

// fakeMirror is another server's API as the primary sees it: its channel
// endpoint (verification) and its metrics endpoint, with a request log.
type fakeMirror struct {
	mu        sync.Mutex
	requests  []string
	channel   map[string]any // answer of /api/channels/my-mirror
	metrics   string         // answer of /metrics/channels/my-mirror
	metricsSt int
}

func (f *fakeMirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.URL.RequestURI())
	ch, body, st := f.channel, f.metrics, f.metricsSt
	f.mu.Unlock()
	switch {
	case r.URL.Path == "/api/channels/my-mirror":
		_ = json.NewEncoder(w).Encode(ch)
	case r.URL.Path == "/metrics/channels/my-mirror":
		if st == 0 {
			st = 200
		}
		w.WriteHeader(st)
		_, _ = w.Write([]byte(body))
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeMirror) set(fn func(*fakeMirror)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

func (f *fakeMirror) metricsRequests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.requests {
		if strings.HasPrefix(r, "/metrics/") {
			out = append(out, r)
		}
	}
	return out
}

// TestMirrorRegistry covers quetz-api.md §10 cases 39 and 40 and the bad
// inputs of the registry.
func TestMirrorRegistry(t *testing.T) { inHTTPModes(t, testMirrorRegistry) }

func testMirrorRegistry(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	fm := &fakeMirror{channel: map[string]any{"name": "my-mirror", "mirror_channel_url": "http://primary/get/my-channel"}}
	srv := httptest.NewServer(fm)
	defer srv.Close()
	e.newChannel(t, "my-channel", false, admin)
	url := srv.URL + "/get/my-mirror"
	e.do(t, "POST", "/api/channels/my-channel/mirrors", admin, map[string]any{"url": url}, nil).want(t, 201)
	var ms []map[string]string
	e.get(t, "/api/channels/my-channel/mirrors", "").want(t, 200).decode(t, &ms)
	if len(ms) != 1 || ms[0]["url"] != url || ms[0]["api_endpoint"] != srv.URL+"/api/channels/my-mirror" ||
		ms[0]["metrics_endpoint"] != srv.URL+"/metrics/channels/my-mirror" || len(ms[0]["id"]) != 36 {
		t.Fatalf("case 39: mirrors %v", ms)
	}
	e.do(t, "POST", "/api/channels/my-channel/mirrors", admin, map[string]any{"url": url}, nil).want(t, 409)
	e.do(t, "POST", "/api/channels/my-channel/mirrors/", admin, map[string]any{"url": url}, nil).want(t, 307) // case 40

	// Bad inputs: nothing registered.
	e.do(t, "POST", "/api/channels/my-channel/mirrors", admin, map[string]any{"url": "ftp://x/get/y"}, nil).wantErr(t, 422, "String should match pattern")
	fm.set(func(f *fakeMirror) { f.channel = map[string]any{"name": "my-mirror"} })
	e.do(t, "POST", "/api/channels/my-channel/mirrors", admin, map[string]any{"url": srv.URL + "/get/my-mirror", "api_endpoint": srv.URL + "/api/channels/my-mirror", "metrics_endpoint": srv.URL + "/m2"}, nil).wantErr(t, 422, "mirror server is not quetz server")
	fm.set(func(f *fakeMirror) { f.channel = map[string]any{"name": "my-mirror", "mirror_channel_url": nil} })
	e.do(t, "POST", "/api/channels/my-channel/mirrors", admin, map[string]any{"url": srv.URL + "/get/my-mirror?x", "api_endpoint": srv.URL + "/api/channels/my-mirror"}, nil).wantErr(t, 404, "is not a mirror server")
	e.do(t, "POST", "/api/channels/my-channel/mirrors", admin, map[string]any{"url": "http://127.0.0.1:1/get/nothing"}, nil).wantErr(t, 422, "could not connect to remote repository")
	member := e.newUser(t, "regmember", "member")
	e.do(t, "POST", "/api/channels/my-channel/mirrors", member, map[string]any{"url": url + "2"}, nil).want(t, 403)
	e.get(t, "/api/channels/my-channel/mirrors", "").want(t, 200).decode(t, &ms)
	if len(ms) != 1 {
		t.Fatalf("a refused registration changed the list: %v", ms)
	}
	e.do(t, "DELETE", "/api/channels/my-channel/mirrors/not-a-uuid", admin, nil, nil).want(t, 422)
	e.do(t, "DELETE", "/api/channels/my-channel/mirrors/"+ms[0]["id"], member, nil, nil).want(t, 403)
	e.do(t, "DELETE", "/api/channels/my-channel/mirrors/"+ms[0]["id"], admin, nil, nil).want(t, 200)
	e.do(t, "DELETE", "/api/channels/my-channel/mirrors/"+ms[0]["id"], admin, nil, nil).want(t, 200) // unknown id: fine
	e.get(t, "/api/channels/my-channel/mirrors", "").want(t, 200).decode(t, &ms)
	if len(ms) != 0 {
		t.Fatalf("after delete: %v", ms)
	}
}

// TestSynchronizeMetrics covers quetz-api.md §10 cases 73 and 74, with a
// controllable clock, plus failures that must neither lose nor double-count
// an hour.
func TestSynchronizeMetrics(t *testing.T) { inHTTPModes(t, testSynchronizeMetrics) }

func testSynchronizeMetrics(t *testing.T, mode ...nodetest.Option) {
	var clock atomic.Int64
	t0 := time.Date(2020, 9, 30, 5, 0, 0, 0, time.UTC)
	clock.Store(t0.Unix())
	e := startIn(t, mode, func(c *node.Config) { c.API.Now = func() time.Time { return time.Unix(clock.Load(), 0).UTC() } })
	fm := &fakeMirror{channel: map[string]any{"mirror_channel_url": "http://primary/get/my-channel"}, metrics: `{"packages":{}}`}
	srv := httptest.NewServer(fm)
	defer srv.Close()
	e.newChannel(t, "my-channel", false, admin)
	spec := condatest.Spec{Name: "test-package", Version: "0.1", Build: "0", Subdir: "linux-64"}
	fn := condatest.Filename(spec, ".tar.bz2")
	e.upload(t, admin, "my-channel", fn, condatest.TarBz2(t, spec)).want(t, 201)
	sync := func() {
		t.Helper()
		var j jobOut
		e.do(t, "PUT", "/api/channels/my-channel/actions", admin, map[string]any{"action": "synchronize_metrics"}, nil).want(t, 200).decode(t, &j)
		e.waitJob(t, j.ID, "success")
	}
	sync() // case 73: no mirrors, no requests
	if got := fm.metricsRequests(); len(got) != 0 {
		t.Fatalf("case 73: %v", got)
	}
	e.do(t, "POST", "/api/channels/my-channel/mirrors", admin, map[string]any{"url": srv.URL + "/get/my-mirror"}, nil).want(t, 201)
	sync()
	t1 := time.Date(2020, 10, 1, 6, 0, 0, 0, time.UTC)
	total := func() int64 {
		var m struct {
			Total int64 `json:"total"`
		}
		e.get(t, "/metrics/channels/my-channel/packages/test-package/versions/linux-64/"+fn+"?period=Y", "").want(t, 200).decode(t, &m)
		return m.Total
	}
	// The mirror fails once: the window is retried, not lost.
	fm.set(func(f *fakeMirror) {
		f.metricsSt = 500
	})
	clock.Store(t1.Add(25 * time.Minute).Unix())
	sync()
	fm.set(func(f *fakeMirror) {
		f.metricsSt = 200
		f.metrics = `{"packages":{"linux-64/` + fn + `":{"series":[{"timestamp":"2020-10-01T05:00:00","count":2}]}}}`
	})
	sync()
	if got := total(); got != 2 {
		t.Fatalf("case 74: total %d after the second pull, want 2", got)
	}
	sync() // same hour window: nothing new, nothing counted twice
	if got := total(); got != 2 {
		t.Fatalf("repeated pull counted again: %d", got)
	}
	for _, period := range []string{"H", "D", "M", "Y"} {
		var m struct {
			Total int64 `json:"total"`
		}
		e.get(t, "/metrics/channels/my-channel/packages/test-package/versions/linux-64/"+fn+"?period="+period, "").want(t, 200).decode(t, &m)
		if m.Total != 2 {
			t.Fatalf("case 74: period %s total %d, want 2", period, m.Total)
		}
	}
	clock.Store(t1.Add(time.Hour + 5*time.Minute).Unix())
	fm.set(func(f *fakeMirror) {
		f.metrics = `{"packages":{"linux-64/` + fn + `":{"series":[{"timestamp":"2020-10-01T06:00:00","count":1}]}}}`
	})
	sync()
	if got := total(); got != 3 {
		t.Fatalf("case 74: day total %d, want 3", got)
	}
	// Garbage and huge answers: an error on the task, nothing counted.
	clock.Store(t1.Add(2*time.Hour + 5*time.Minute).Unix())
	fm.set(func(f *fakeMirror) { f.metrics = `<html>oops</html>` })
	sync()
	fm.set(func(f *fakeMirror) {
		f.metrics = `{"packages":{"linux-64/` + fn + `":{"series":[{"timestamp":"yesterday","count":5}]}}}`
	})
	sync()
	// A huge answer (more than 64 MiB) is refused, not buffered.
	fm.set(func(f *fakeMirror) {
		f.metrics = `{"packages":{"linux-64/` + fn + `":{"series":[` + strings.Repeat(`{"timestamp":"2020-10-01T07:00:00","count":1},`, 1<<20+1<<19) + `{"timestamp":"2020-10-01T07:00:00","count":1}]}}}`
	})
	sync()
	if got := total(); got != 3 {
		t.Fatalf("garbage or huge answers counted: %d", got)
	}
	want := []string{
		"/metrics/channels/my-mirror?period=H&end=2020-09-30T05:00:00",
		"/metrics/channels/my-mirror?period=H&start=2020-09-30T05:00:00&end=2020-10-01T06:00:00", // failed
		"/metrics/channels/my-mirror?period=H&start=2020-09-30T05:00:00&end=2020-10-01T06:00:00",
		"/metrics/channels/my-mirror?period=H&start=2020-10-01T06:00:00&end=2020-10-01T07:00:00",
	}
	got := fm.metricsRequests()
	// The failed attempt may have been retried by the client; compare the
	// distinct windows in order.
	var windows []string
	for _, r := range got {
		if len(windows) == 0 || windows[len(windows)-1] != r {
			windows = append(windows, r)
		}
	}
	if fmt.Sprint(windows[:4]) != fmt.Sprint([]string{want[0], want[2], want[3], "/metrics/channels/my-mirror?period=H&start=2020-10-01T07:00:00&end=2020-10-01T08:00:00"}) {
		t.Fatalf("pull windows:\n%v", strings.Join(windows, "\n"))
	}
}

// TestRegisterMirrorBetweenNodes: a second real node creates a mirror
// channel of the first with register_mirror=true (case 41's flow between two
// servers); the primary lists it; downloads on the mirror reach the
// primary's metrics through synchronize_metrics exactly once.
func TestRegisterMirrorBetweenNodes(t *testing.T) { inHTTPModes(t, testRegisterMirrorBetweenNodes) }

func testRegisterMirrorBetweenNodes(t *testing.T, mode ...nodetest.Option) {
	var pClock, mClock atomic.Int64
	pClock.Store(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC).Unix())
	mClock.Store(time.Date(2026, 1, 1, 10, 20, 0, 0, time.UTC).Unix())
	p := startIn(t, mode, func(c *node.Config) { c.API.Now = func() time.Time { return time.Unix(pClock.Load(), 0).UTC() } })
	m := startIn(t, mode, func(c *node.Config) {
		c.API.Now = func() time.Time { return time.Unix(mClock.Load(), 0).UTC() }
		c.DownloadFlush = 10 * time.Millisecond
	})
	p.newChannel(t, "my-channel", false, admin)
	spec := condatest.Spec{Name: "pkg", Version: "1.0", Build: "0", Subdir: "linux-64"}
	fn := condatest.Filename(spec, ".conda")
	p.upload(t, admin, "my-channel", fn, condatest.Conda(t, spec)).want(t, 201)

	body := map[string]any{"name": "mirror-channel", "private": false, "mirror_channel_url": p.url + "/get/my-channel", "mirror_mode": "mirror"}
	m.do(t, "POST", "/api/channels?register_mirror=true&mirror_api_key="+nodetest.AdminKey, admin, body, nil).want(t, 201)
	var ms []map[string]string
	p.get(t, "/api/channels/my-channel/mirrors", "").want(t, 200).decode(t, &ms)
	if len(ms) != 1 || ms[0]["url"] != m.url+"/get/mirror-channel" || ms[0]["metrics_endpoint"] != m.url+"/metrics/channels/mirror-channel" {
		t.Fatalf("primary's mirrors: %v", ms)
	}
	deadline := time.Now().Add(20 * time.Second)
	for m.get(t, "/get/mirror-channel/linux-64/"+fn, "").status != 200 {
		if time.Now().After(deadline) {
			t.Fatal("mirror never synced")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 2 {
		m.get(t, "/get/mirror-channel/linux-64/"+fn, "").want(t, 200)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		var mm struct {
			Total int64 `json:"total"`
		}
		m.get(t, "/metrics/channels/mirror-channel/packages/pkg/versions/linux-64/"+fn, "").want(t, 200).decode(t, &mm)
		if mm.Total >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mirror did not count its downloads: %d", mm.Total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 2 { // twice: counted once
		var j jobOut
		p.do(t, "PUT", "/api/channels/my-channel/actions", admin, map[string]any{"action": "synchronize_metrics"}, nil).want(t, 200).decode(t, &j)
		p.waitJob(t, j.ID, "success")
	}
	var pm struct {
		Total  int64  `json:"total"`
		Series series `json:"series"`
	}
	// (The primary also counts the file its mirror fetched, at its own clock's
	// hour; only the mirror's hour matters here.)
	p.get(t, "/metrics/channels/my-channel/packages/pkg/versions/linux-64/"+fn+"?period=H&start=2026-01-01T10:00&end=2026-01-01T11:00", "").want(t, 200).decode(t, &pm)
	if pm.Total != 3 || fmt.Sprint(pm.Series) != "[{2026-01-01T10:00:00 3}]" {
		t.Fatalf("primary's metrics after two pulls: %+v", pm)
	}
	var by struct {
		Total   int64 `json:"total"`
		Local   int64 `json:"local"`
		Mirrors []struct {
			URL   string `json:"url"`
			Total int64  `json:"total"`
		} `json:"mirrors"`
	}
	p.get(t, "/metrics/channels/my-channel/mirrors", "").want(t, 200).decode(t, &by)
	if len(by.Mirrors) != 1 || by.Mirrors[0].Total != 3 || by.Mirrors[0].URL != m.url+"/get/mirror-channel" || by.Local != by.Total-3 {
		t.Fatalf("per-mirror downloads: %+v", by)
	}
	pixi := string(p.get(t, "/api/channels/my-channel/mirrors/config?client=pixi", "").want(t, 200).body)
	mi, pi := strings.Index(pixi, m.url+"/get/mirror-channel"), strings.LastIndex(pixi, p.url+"/get/my-channel")
	if mi < 0 || pi < 0 || mi > pi || !strings.Contains(pixi, "[mirrors]") {
		t.Fatalf("pixi config does not list the mirror first and the primary last:\n%s", pixi)
	}
	mamba := string(p.get(t, "/api/channels/my-channel/mirrors/config?client=mamba", "").want(t, 200).body)
	if !strings.Contains(mamba, "mirrored_channels:") || !strings.Contains(mamba, "- "+m.url+"/get/mirror-channel") {
		t.Fatalf("mamba config:\n%s", mamba)
	}
	p.get(t, "/api/channels/my-channel/mirrors/config?client=emacs", "").want(t, 422)
}

// TestRegistryFetchesOfNonOwnersAreConfined: a channel owner who is not a
// server owner cannot make the node call loopback (or any denied network)
// through the mirror registry's check, nor through synchronize_metrics,
// and the answers say nothing of what is there; a server owner still can.
func TestRegistryFetchesOfNonOwnersAreConfined(t *testing.T) {
	inHTTPModes(t, testRegistryFetchesOfNonOwnersAreConfined)
}

func testRegistryFetchesOfNonOwnersAreConfined(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	fm := &fakeMirror{channel: map[string]any{"name": "my-mirror", "mirror_channel_url": "http://primary/get/c"}, metrics: `{"packages": {}}`}
	srv := httptest.NewServer(fm)
	defer srv.Close()
	member := e.newUser(t, "chowner", "member")
	e.newChannel(t, "members-channel", false, member)
	url := srv.URL + "/get/my-mirror"
	refused := e.do(t, "POST", "/api/channels/members-channel/mirrors", member, map[string]any{"url": url}, nil).wantErr(t, 422, "could not connect to remote repository")
	closed := e.do(t, "POST", "/api/channels/members-channel/mirrors", member, map[string]any{"url": "http://127.0.0.1:1/get/my-mirror"}, nil).wantErr(t, 422)
	if refused.detail(t) != strings.Replace(closed.detail(t), "http://127.0.0.1:1", srv.URL, 1) {
		t.Fatalf("an open and a closed port read differently: %q vs %q", refused.detail(t), closed.detail(t))
	}
	fm.set(func(f *fakeMirror) {
		if len(f.requests) != 0 {
			t.Errorf("the node called loopback for a non-owner: %v", f.requests)
		}
	})

	// A server owner registers it (the owner may reach loopback); the
	// channel owner's repeated synchronize_metrics job stays confined.
	e.newChannel(t, "owned", false, admin)
	e.addMember(t, "owned", "chowner", "owner")
	e.do(t, "POST", "/api/channels/owned/mirrors", admin, map[string]any{"url": url}, nil).want(t, 201)
	fm.set(func(f *fakeMirror) { f.requests = nil })
	e.do(t, "PUT", "/api/channels/owned/actions", member, map[string]any{"action": "synchronize_metrics", "repeat_every_seconds": 5}, nil).wantErr(t, 422, "greater than or equal to 60")
	var job struct {
		ID int64 `json:"id"`
	}
	e.do(t, "PUT", "/api/channels/owned/actions", member, map[string]any{"action": "synchronize_metrics"}, nil).want(t, 200).decode(t, &job)
	e.waitJob(t, job.ID, "success")
	if len(fm.metricsRequests()) != 0 {
		t.Fatalf("a member's job called loopback: %v", fm.metricsRequests())
	}
	tasks := e.get(t, fmt.Sprintf("/api/jobs/%d/tasks", job.ID), admin).want(t, 200).String()
	if strings.Contains(tasks, "connect:") || strings.Contains(tasks, "address not allowed") {
		t.Fatalf("the task tells what the node found: %s", tasks)
	}
	// The server owner's own job reaches it.
	e.do(t, "PUT", "/api/channels/owned/actions", admin, map[string]any{"action": "synchronize_metrics"}, nil).want(t, 200)
	eventually(t, "the owner's job pulls the mirror's metrics", func() bool { return len(fm.metricsRequests()) > 0 })
}
