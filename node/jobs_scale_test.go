package node_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condamesh/condamesh/api"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// scaleUpstream is a mirror's upstream channel on 127.0.0.1 whose
// linux-64/repodata.json lists n package files. With failing, half of the
// files answer 404 and the other half bytes that do not match their
// sha256; otherwise every file answers its bytes after delay. It counts
// package file requests.
type scaleUpstream struct {
	srv      *httptest.Server
	files    map[string][]byte // linux-64 filename -> bytes
	missing  map[string]bool   // failing: the files that answer 404
	requests atomic.Int64
}

func newScaleUpstream(t *testing.T, n int, failing bool, delay time.Duration) *scaleUpstream {
	t.Helper()
	u := &scaleUpstream{files: make(map[string][]byte, n), missing: map[string]bool{}}
	recs := make([]conda.Record, 0, n)
	for i := range n {
		name := fmt.Sprintf("pkg%d", i%100)
		fn := fmt.Sprintf("%s-1.%d-0.conda", name, i)
		data := []byte(fmt.Sprintf("package file %d of the scale upstream", i))
		u.files[fn] = data
		u.missing[fn] = i%2 == 0
		sum := sha256.Sum256(data)
		recs = append(recs, conda.Record{Filename: fn, Subdir: "linux-64", Fields: map[string]any{
			"name": name, "version": fmt.Sprintf("1.%d", i), "build": "0", "build_number": int64(0),
			"depends": []any{}, "subdir": "linux-64", "sha256": hex.EncodeToString(sum[:]), "size": int64(len(data)),
		}})
	}
	index := map[string][]byte{
		"channeldata.json":       []byte(`{"subdirs":["linux-64","noarch"]}`),
		"linux-64/repodata.json": conda.Repodata("linux-64", recs),
		"noarch/repodata.json":   conda.Repodata("noarch", nil),
	}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, "/chan/")
		if b, ok := index[p]; ok {
			_, _ = w.Write(b)
			return
		}
		fn, _ := strings.CutPrefix(p, "linux-64/")
		data, ok := u.files[fn]
		if !ok {
			http.NotFound(w, r)
			return
		}
		u.requests.Add(1)
		switch {
		case failing && u.missing[fn]:
			http.NotFound(w, r)
		case failing:
			_, _ = w.Write(append([]byte("not "), data...))
		default:
			select {
			case <-time.After(delay):
				_, _ = w.Write(data)
			case <-r.Context().Done():
			}
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// restJSON sends a request to n as the admin, checks the status and
// decodes the answer into out (if not nil).
func restJSON(t *testing.T, n *nodetest.Node, method, path, body string, want int, out any) {
	t.Helper()
	st, b := call(t, n.URL(), nodetest.AdminKey, method, path, "application/json", strings.NewReader(body))
	if st != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, st, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %.200s", method, path, err, b)
		}
	}
}

// startMirrorSync creates public mirror channel name of upstream url (no
// automatic sync) and starts a synchronize_repodata job, returning its id.
func startMirrorSync(t *testing.T, n *nodetest.Node, name, url string) int64 {
	t.Helper()
	restJSON(t, n, "POST", "/api/channels", fmt.Sprintf(`{"name":%q,"private":false,"mirror_channel_url":%q,"mirror_mode":"mirror","actions":[]}`, name, url), http.StatusCreated, nil)
	var job struct {
		ID int64 `json:"id"`
	}
	restJSON(t, n, "PUT", "/api/channels/"+name+"/actions", `{"action":"synchronize_repodata"}`, http.StatusOK, &job)
	return job.ID
}

// jobStatus is a job's status in the jobs API.
func jobStatus(t *testing.T, n *nodetest.Node, id int64) string {
	t.Helper()
	var j struct {
		Status string `json:"status"`
	}
	restJSON(t, n, "GET", fmt.Sprintf("/api/jobs/%d", id), "", http.StatusOK, &j)
	return j.Status
}

// lastTask is the newest task of job id, whatever its status.
func lastTask(t *testing.T, n *nodetest.Node, id int64) api.TaskJSON {
	t.Helper()
	var page struct {
		Result []api.TaskJSON `json:"result"`
	}
	q := "status=created&status=pending&status=running&status=success&status=failed&status=skipped&limit=-1"
	restJSON(t, n, "GET", fmt.Sprintf("/api/jobs/%d/tasks?%s", id, q), "", http.StatusOK, &page)
	if len(page.Result) == 0 {
		t.Fatalf("job %d has no task", id)
	}
	return page.Result[len(page.Result)-1]
}

// raftLogBytes sums the data of the entries from..to of the Raft log in
// raft.db (the node stopped), and returns the largest.
func raftLogBytes(t *testing.T, path string, from, to uint64) (sum, largest int64) {
	t.Helper()
	logs, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	if first, err := logs.FirstIndex(); err != nil || first > from {
		t.Fatalf("the Raft log starts at %d (%v): entries from %d were compacted", first, err, from)
	}
	for i := from; i <= to; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			t.Fatalf("raft log entry %d: %v", i, err)
		}
		sum += int64(len(l.Data))
		largest = max(largest, int64(len(l.Data)))
	}
	return sum, largest
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// raftGrowthBound is what a mirror sync of 20,000 files that all fail may
// add to the Raft log (the data of its entries): the task record keeps
// the first 100 errors (16 KiB at most) and a count, and is written at
// most every 2 s, so within the test's 3 minutes at most about 1.5 MB.
const raftGrowthBound = 2 << 20

// TestMirrorSyncFailuresBoundRaftLog: a sync of 20,000 files that all
// fail (404, or bytes that do not match the sha256) adds at most
// raftGrowthBound bytes to the Raft log; its task keeps the first 100
// errors and counts them all; the node's error log of the task lists
// every one.
func TestMirrorSyncFailuresBoundRaftLog(t *testing.T) {
	const files = 20000
	up := newScaleUpstream(t, files, true, 0)
	n := nodetest.Start(t)
	raftDB := filepath.Join(n.Dir, "raft", "raft.db")
	sizeBefore := fileSize(t, raftDB)
	from := n.Cluster().LastIndex() + 1
	start := time.Now()
	id := startMirrorSync(t, n, "m", up.srv.URL+"/chan")
	nodetest.Eventually(t, 3*time.Minute, "the sync job ends", func() bool {
		st := jobStatus(t, n, id)
		return st == "success" || st == "failed"
	})
	took := time.Since(start)
	to := n.Cluster().LastIndex()
	task := lastTask(t, n, id)
	n.Stop()
	grew, largest := raftLogBytes(t, raftDB, from, to)
	t.Logf("a sync of %d failing files in %v: %d Raft log entries, %d bytes of entry data (largest %d); raft.db %d -> %d bytes",
		files, took.Round(time.Second), to-from+1, grew, largest, sizeBefore, fileSize(t, raftDB))
	if grew > raftGrowthBound {
		t.Errorf("the sync added %d bytes to the Raft log, bound %d", grew, raftGrowthBound)
	}
	if p := task.Progress; task.Status != "success" || p == nil || p.FilesDone != files || p.ErrorsTotal != files || len(p.Errors) != 100 {
		t.Fatalf("task %+v %+v: want success, %d files done, %d errors counted, 100 kept", task, p, files, files)
	}
	b, err := os.ReadFile(filepath.Join(n.Dir, "task-errors", fmt.Sprintf("task-%d.log", task.ID)))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != files {
		t.Fatalf("the task's error log has %d lines, want %d", lines, files)
	}
	if got := up.requests.Load(); got < files {
		t.Fatalf("the upstream saw %d file requests for %d files", got, files)
	}
}

// TestCancelMirrorSyncStopsDownloads: cancelling a running mirror sync
// (PATCH /api/jobs/{id} {"status": "cancelled"}) stops its downloads:
// after a settle of 1 s the upstream sees no new request; the job stays
// cancelled, its task fails as cancelled, and every file listed in the
// channel is whole (publication goes on in batches of 50 during the sync,
// none after the cancel).
func TestCancelMirrorSyncStopsDownloads(t *testing.T) {
	const files = 20000
	up := newScaleUpstream(t, files, false, 20*time.Millisecond) // a sync of minutes
	n := nodetest.Start(t, func(c *node.Config) { c.Mirror.BatchFiles = 50 })
	ctx := context.Background()
	id := startMirrorSync(t, n, "m", up.srv.URL+"/chan")
	listed := func() []*v1.PackageVersion {
		vs, err := n.Catalog().SubdirVersions(ctx, "m", "linux-64")
		if err != nil {
			t.Fatal(err)
		}
		return vs
	}
	nodetest.Eventually(t, time.Minute, "batches published", func() bool { return len(listed()) >= 100 })

	restJSON(t, n, "PATCH", fmt.Sprintf("/api/jobs/%d", id), `{"status":"cancelled"}`, http.StatusOK, nil)
	answered := time.Now()
	atCancel := up.requests.Load()
	var settled int64
	nodetest.Eventually(t, 5*time.Second, "settle of 1 s", func() bool {
		settled = up.requests.Load()
		return time.Since(answered) >= time.Second
	})
	published := len(listed())
	var last int64
	nodetest.Eventually(t, 10*time.Second, "2 s without new upstream requests", func() bool {
		if last = up.requests.Load(); last != settled {
			t.Fatalf("the upstream saw %d requests at the cancel, %d 1 s later, %d %v after: downloads go on",
				atCancel, settled, last, time.Since(answered).Round(time.Millisecond))
		}
		return time.Since(answered) >= 3*time.Second
	})
	t.Logf("upstream requests: %d at the cancel, %d after 1 s, %d after 3 s (of %d files); %d files published", atCancel, settled, last, files, published)

	nodetest.Eventually(t, 10*time.Second, "the task ends", func() bool { return lastTask(t, n, id).Status != "running" })
	if task := lastTask(t, n, id); task.Status != "failed" || !strings.Contains(task.Message, "cancelled") {
		t.Fatalf("task %s %q, want failed as cancelled", task.Status, task.Message)
	}
	if st := jobStatus(t, n, id); st != "cancelled" {
		t.Fatalf("job %s, want cancelled", st)
	}
	vs := listed()
	if len(vs) != published || len(vs) >= files {
		t.Fatalf("%d files listed after the settle, %d now, of %d", published, len(vs), files)
	}
	for _, v := range vs {
		st, body := call(t, n.URL(), "", "GET", "/get/m/linux-64/"+v.Filename, "", nil)
		if want := up.files[v.Filename]; st != http.StatusOK || string(body) != string(want) || v.Sha256 != sha(want) {
			t.Fatalf("listed %s: %d, %d bytes, sha256 %s: not the upstream's file", v.Filename, st, len(body), v.Sha256)
		}
	}
}
