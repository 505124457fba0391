package api_test

import (
	"context"
	"fmt"
	"github.com/condamesh/condamesh/node/nodetest"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/store"
)

type jobOut struct {
	ID                 int64   `json:"id"`
	Manifest           string  `json:"manifest"`
	OwnerID            string  `json:"owner_id"`
	Created            string  `json:"created"`
	Status             string  `json:"status"`
	ItemsSpec          *string `json:"items_spec"`
	StartAt            *string `json:"start_at"`
	RepeatEverySeconds *int64  `json:"repeat_every_seconds"`
}

// waitJob polls a job until its status is one of want.
func (e *env) waitJob(t testing.TB, id int64, want ...string) jobOut {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var j jobOut
		e.get(t, fmt.Sprintf("/api/jobs/%d", id), admin).want(t, 200).decode(t, &j)
		for _, w := range want {
			if j.Status == w {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d is %q, want %v", id, j.Status, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestChannelActions covers quetz-api.md §10 cases 42, 43 and 67 for the
// actions that apply to local channels, plus the job shape and permissions.
func TestChannelActions(t *testing.T) { inHTTPModes(t, testChannelActions) }

func testChannelActions(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	maint := e.newUser(t, "maint", "member")
	mem := e.newUser(t, "mem", "member")
	e.newChannel(t, "acts", false, admin)
	e.addMember(t, "acts", "maint", "maintainer")
	e.addMember(t, "acts", "mem", "member")

	t.Run("ShapeAndPermissions", func(t *testing.T) {
		for _, action := range []string{"reindex", "generate_indexes", "synchronize_metrics"} {
			var j jobOut
			r := e.do(t, "PUT", "/api/channels/acts/actions", maint, map[string]any{"action": action}, nil).want(t, 200)
			r.decode(t, &j)
			if j.Manifest != action || j.Status != "pending" || j.ItemsSpec != nil || j.StartAt != nil || j.RepeatEverySeconds != nil || j.OwnerID == "" || j.Created == "" {
				t.Fatalf("job %+v", j)
			}
			for _, key := range []string{"id", "created", "items_spec", "manifest", "owner_id", "status", "repeat_every_seconds", "start_at"} {
				if !strings.Contains(string(r.body), `"`+key+`"`) {
					t.Fatalf("job JSON lacks %s: %s", key, r.body)
				}
			}
			e.do(t, "PUT", "/api/channels/acts/actions", mem, map[string]any{"action": action}, nil).want(t, 403)
		}
		e.do(t, "PUT", "/api/channels/acts/actions", maint, map[string]any{"action": "validate_packages"}, nil).want(t, 403)
		e.do(t, "PUT", "/api/channels/acts/actions", "", map[string]any{"action": "reindex"}, nil).want(t, 401)
		e.do(t, "PUT", "/api/channels/acts/actions", maint, map[string]any{"action": "dance"}, nil).want(t, 422)
		r := e.do(t, "PUT", "/api/channels/acts/actions", "", map[string]any{"action": "synchronize"}, nil).want(t, 405)
		if !strings.Contains(string(r.body), "synchronize not allowed") {
			t.Fatalf("%v", r)
		}
	})

	t.Run("StartAt", func(t *testing.T) {
		later := time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04:05")
		var j jobOut
		e.do(t, "PUT", "/api/channels/acts/actions", admin, map[string]any{"action": "generate_indexes", "start_at": later}, nil).want(t, 200).decode(t, &j)
		if j.StartAt == nil || *j.StartAt != later {
			t.Fatalf("start_at %v, want %s", j.StartAt, later)
		}
		var now jobOut
		e.do(t, "PUT", "/api/channels/acts/actions", admin, map[string]any{"action": "generate_indexes", "start_at": time.Now().UTC().Add(-5 * time.Second).Format("2006-01-02T15:04:05")}, nil).want(t, 200).decode(t, &now)
		e.waitJob(t, now.ID, "success")
		if got := e.waitJob(t, j.ID, "pending"); got.Status != "pending" {
			t.Fatalf("future job ran: %+v", got)
		}
		var tasks struct {
			Result []map[string]any `json:"result"`
		}
		e.get(t, fmt.Sprintf("/api/jobs/%d/tasks?status=created&status=pending&status=running&status=success", j.ID), admin).want(t, 200).decode(t, &tasks)
		if len(tasks.Result) != 0 {
			t.Fatalf("future job has tasks: %v", tasks.Result)
		}
		e.get(t, fmt.Sprintf("/api/jobs/%d/tasks?status=success", now.ID), admin).want(t, 200).decode(t, &tasks)
		if len(tasks.Result) != 1 || fmt.Sprint(tasks.Result[0]["package_version"]) != "map[]" {
			t.Fatalf("tasks %v", tasks.Result)
		}
	})

	t.Run("ValidatePackagesDropsMissingFiles", func(t *testing.T) {
		a := condatest.TarBz2(t, pkgSpec("vp", "0.1", "linux-64"))
		b := condatest.TarBz2(t, pkgSpec("vp", "0.2", "linux-64"))
		e.upload(t, admin, "acts", "vp-0.1-h0_0.tar.bz2", a).want(t, 201)
		e.upload(t, admin, "acts", "vp-0.2-h0_0.tar.bz2", b).want(t, 201)
		if rd := e.repodata(t, "acts", "linux-64", ""); len(rd) != 2 {
			t.Fatalf("repodata has %d records, want 2", len(rd))
		}
		c, _ := store.CIDFromHex(sha256Hex(a))
		if err := e.n.Store().Delete(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		var j jobOut
		e.do(t, "PUT", "/api/channels/acts/actions", admin, map[string]any{"action": "validate_packages"}, nil).want(t, 200).decode(t, &j)
		e.waitJob(t, j.ID, "success")
		rd := e.repodata(t, "acts", "linux-64", "")
		if _, ok := rd["vp-0.2-h0_0.tar.bz2"]; len(rd) != 1 || !ok {
			t.Fatalf("after validate_packages repodata has %v, want only vp-0.2", rd)
		}
		e.get(t, "/api/channels/acts/packages/vp/versions/linux-64/vp-0.1-h0_0.tar.bz2", admin).want(t, 404)
	})

	t.Run("ReindexAndCleanup", func(t *testing.T) {
		var j jobOut
		e.do(t, "PUT", "/api/channels/acts/actions", admin, map[string]any{"action": "reindex"}, nil).want(t, 200).decode(t, &j)
		e.waitJob(t, j.ID, "success")
		e.do(t, "POST", "/api/channels/acts/packages", admin, map[string]any{"name": "empty-pkg"}, nil).want(t, 201)
		e.do(t, "PUT", "/api/channels/acts/actions", admin, map[string]any{"action": "cleanup_dry_run"}, nil).want(t, 200).decode(t, &j)
		e.waitJob(t, j.ID, "success")
		e.get(t, "/api/channels/acts/packages/empty-pkg", admin).want(t, 200)
		e.do(t, "PUT", "/api/channels/acts/actions", maint, map[string]any{"action": "cleanup"}, nil).want(t, 403)
		e.do(t, "PUT", "/api/channels/acts/actions", admin, map[string]any{"action": "cleanup"}, nil).want(t, 200).decode(t, &j)
		e.waitJob(t, j.ID, "success")
		e.get(t, "/api/channels/acts/packages/empty-pkg", admin).want(t, 404)
		e.get(t, "/api/channels/acts/packages/vp", admin).want(t, 200)
	})
}

// TestJobsAPI covers quetz-api.md §10 cases 44-49.
func TestJobsAPI(t *testing.T) { inHTTPModes(t, testJobsAPI) }

func testJobsAPI(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	user := e.newUser(t, "jobuser", "member")
	for _, m := range []string{"dummy_func", "os:listdir", "os.listdir", "quetz.dummy_func"} {
		r := e.do(t, "POST", "/api/jobs", admin, map[string]any{"manifest": m, "items_spec": "*"}, nil).want(t, 422)
		if !strings.Contains(string(r.body), "invalid function") || !strings.Contains(string(r.body), m) {
			t.Fatalf("%v", r)
		}
	}
	r := e.do(t, "POST", "/api/jobs", admin, map[string]any{"manifest": "generate_indexes", "items_spec": nil}, nil).want(t, 422)
	if !strings.Contains(string(r.body), "Input should be a valid string") {
		t.Fatalf("%v", r)
	}
	r = e.do(t, "POST", "/api/jobs", user, map[string]any{"manifest": "generate_indexes", "items_spec": "*"}, nil).want(t, 401)
	if !strings.Contains(string(r.body), "Not allowed") {
		t.Fatalf("%v", r)
	}
	// One package file for the items_spec "*" to select (one task per file).
	e.newChannel(t, "jobs-api", false, admin)
	one := pkgSpec("one", "1.0", "noarch")
	e.upload(t, admin, "jobs-api", condatest.Filename(one, ".conda"), condatest.Conda(t, one)).want(t, 201)
	var j jobOut
	e.do(t, "POST", "/api/jobs", admin, map[string]any{"manifest": "generate_indexes", "items_spec": "*"}, nil).want(t, 201).decode(t, &j)
	if got := e.waitJob(t, j.ID, "success"); got.ItemsSpec == nil || *got.ItemsSpec != "*" {
		t.Fatalf("job %+v", got)
	}
	e.get(t, fmt.Sprintf("/api/jobs/%d", j.ID), user).want(t, 401)
	e.get(t, "/api/jobs/999", admin).want(t, 404)

	later := time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04:05")
	var pend jobOut
	e.do(t, "POST", "/api/jobs", admin, map[string]any{"manifest": "generate_indexes", "items_spec": "*", "start_at": later}, nil).want(t, 201).decode(t, &pend)
	ids := func(q string) []int64 {
		var out struct {
			Pagination struct {
				AllRecordsCount int `json:"all_records_count"`
			} `json:"pagination"`
			Result []jobOut `json:"result"`
		}
		e.get(t, "/api/jobs"+q, admin).want(t, 200).decode(t, &out)
		var got []int64
		for _, j := range out.Result {
			got = append(got, j.ID)
		}
		if out.Pagination.AllRecordsCount < len(got) {
			t.Fatalf("all_records_count %d < %d", out.Pagination.AllRecordsCount, len(got))
		}
		return got
	}
	if got := ids("?status=pending"); fmt.Sprint(got) != fmt.Sprint([]int64{pend.ID}) {
		t.Fatalf("pending jobs %v", got)
	}
	if got := ids("?status=success"); fmt.Sprint(got) != fmt.Sprint([]int64{j.ID}) {
		t.Fatalf("success jobs %v", got)
	}
	if got := ids(""); fmt.Sprint(got) != fmt.Sprint([]int64{pend.ID}) {
		t.Fatalf("default (pending+running) %v", got)
	}
	if got := ids("?status=pending&status=success&limit=1&skip=1"); fmt.Sprint(got) != fmt.Sprint([]int64{pend.ID}) {
		t.Fatalf("paged %v", got)
	}
	if got := ids("?status=pending&status=success&limit=-1"); len(got) != 2 {
		t.Fatalf("limit=-1 %v", got)
	}
	for _, q := range []string{"?status=pending,running", "?status=missing", "?limit=wrongtype"} {
		e.get(t, "/api/jobs"+q, admin).want(t, 422)
	}
	var mine struct {
		Result []jobOut `json:"result"`
	}
	e.get(t, "/api/jobs?status=pending&status=success", user).want(t, 200).decode(t, &mine)
	if len(mine.Result) != 0 {
		t.Fatalf("a member sees others' jobs: %v", mine.Result)
	}
	// Cancel, then force a re-run.
	e.do(t, "PATCH", fmt.Sprintf("/api/jobs/%d", pend.ID), admin, map[string]any{"status": "cancelled"}, nil).want(t, http.StatusOK)
	if got := ids("?status=cancelled"); fmt.Sprint(got) != fmt.Sprint([]int64{pend.ID}) {
		t.Fatalf("cancelled %v", got)
	}
	e.do(t, "PATCH", fmt.Sprintf("/api/jobs/%d", j.ID), admin, map[string]any{"status": "pending", "force": true}, nil).want(t, http.StatusOK)
	e.waitJob(t, j.ID, "success")
	var tasks struct {
		Result []map[string]any `json:"result"`
	}
	e.get(t, fmt.Sprintf("/api/jobs/%d/tasks?status=skipped&status=success", j.ID), admin).want(t, 200).decode(t, &tasks)
	if len(tasks.Result) != 2 {
		t.Fatalf("after a forced re-run want one skipped and one new task, got %v", tasks.Result)
	}
}

// TestCleanupSweepsBlobs: after a channel with packages is deleted, the
// cleanup action removes its package blobs (quetz-api.md §10 case 10: the
// store holds nothing of the deleted channel), while blobs still referenced
// survive.
func TestCleanupSweepsBlobs(t *testing.T) { inHTTPModes(t, testCleanupSweepsBlobs) }

func testCleanupSweepsBlobs(t *testing.T, mode ...nodetest.Option) {
	e := startIn(t, mode, func(c *node.Config) { c.BlobGrace = time.Nanosecond })
	e.newChannel(t, "victim", false, admin)
	e.newChannel(t, "keeper", false, admin)
	gone := condatest.TarBz2(t, pkgSpec("gone", "1.0", "linux-64"))
	kept := condatest.Conda(t, pkgSpec("kept", "1.0", "noarch"))
	e.upload(t, admin, "victim", "gone-1.0-h0_0.tar.bz2", gone).want(t, 201)
	e.upload(t, admin, "keeper", "kept-1.0-h0_0.conda", kept).want(t, 201)
	e.repodata(t, "victim", "linux-64", "")
	e.do(t, "DELETE", "/api/channels/victim", admin, nil, nil).want(t, 200)
	has := func(b []byte) bool {
		c, _ := store.CIDFromHex(sha256Hex(b))
		return e.n.Store().Has(context.Background(), c)
	}
	if !has(gone) {
		t.Fatal("blob gone before any cleanup")
	}
	var j jobOut
	e.do(t, "PUT", "/api/channels/keeper/actions", admin, map[string]any{"action": "cleanup_dry_run"}, nil).want(t, 200).decode(t, &j)
	e.waitJob(t, j.ID, "success")
	if !has(gone) {
		t.Fatal("dry run deleted a blob")
	}
	e.do(t, "PUT", "/api/channels/keeper/actions", admin, map[string]any{"action": "cleanup"}, nil).want(t, 200).decode(t, &j)
	e.waitJob(t, j.ID, "success")
	if has(gone) {
		t.Fatal("blob of the deleted channel survived cleanup")
	}
	if !has(kept) {
		t.Fatal("cleanup deleted a referenced blob")
	}
	if got := e.get(t, "/get/keeper/noarch/kept-1.0-h0_0.conda", "").want(t, 200); sha256Hex(got.body) != sha256Hex(kept) {
		t.Fatal("kept package damaged")
	}
	e.get(t, "/get/keeper/noarch/repodata.json", "").want(t, 200)
}

// TestTasksPaginated: GET /api/jobs/{id}/tasks pages as Quetz does: skip
// and limit (default 20, -1 for all) over the tasks of the asked
// statuses in id order, in the envelope with all_records_count.
func TestTasksPaginated(t *testing.T) { inHTTPModes(t, testTasksPaginated) }

func testTasksPaginated(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	e.newChannel(t, "tasks-page", false, admin)
	const files = 5
	for i := range files {
		spec := pkgSpec(fmt.Sprintf("p%d", i), "1.0", "noarch")
		e.upload(t, admin, "tasks-page", condatest.Filename(spec, ".conda"), condatest.Conda(t, spec)).want(t, 201)
	}
	var j jobOut
	e.do(t, "POST", "/api/jobs", admin, map[string]any{"manifest": "generate_indexes", "items_spec": "*"}, nil).want(t, 201).decode(t, &j)
	e.waitJob(t, j.ID, "success")
	var all []int64
	for _, c := range []struct {
		query                    string
		skip, limit, count, want int // want: tasks answered
	}{
		{"", 0, 20, 0, 0}, // default statuses: created, pending, running
		{"?status=success", 0, 20, files, files},
		{"?status=success&limit=-1", 0, -1, files, files},
		{"?status=success&skip=1&limit=2", 1, 2, files, 2},
		{"?status=success&skip=4&limit=2", 4, 2, files, 1},
		{"?status=success&skip=9", 9, 20, files, 0},
		{"?status=success&limit=0", 0, 0, files, 0},
		{"?status=failed&status=success&skip=0&limit=1", 0, 1, files, 1},
	} {
		var out struct {
			Pagination struct {
				Skip            int `json:"skip"`
				Limit           int `json:"limit"`
				AllRecordsCount int `json:"all_records_count"`
			} `json:"pagination"`
			Result []struct {
				ID     int64  `json:"id"`
				JobID  int64  `json:"job_id"`
				Status string `json:"status"`
			} `json:"result"`
		}
		e.get(t, fmt.Sprintf("/api/jobs/%d/tasks%s", j.ID, c.query), admin).want(t, 200).decode(t, &out)
		p := out.Pagination
		if p.Skip != c.skip || p.Limit != c.limit || p.AllRecordsCount != c.count || len(out.Result) != c.want {
			t.Fatalf("%s: pagination %+v with %d tasks, want skip %d limit %d count %d, %d tasks", c.query, p, len(out.Result), c.skip, c.limit, c.count, c.want)
		}
		var ids []int64
		for _, task := range out.Result {
			if task.JobID != j.ID || task.Status != "success" {
				t.Fatalf("%s: task %+v", c.query, task)
			}
			ids = append(ids, task.ID)
		}
		switch c.query {
		case "?status=success&limit=-1":
			all = ids
		case "?status=success&skip=1&limit=2":
			if fmt.Sprint(ids) != fmt.Sprint(all[1:3]) {
				t.Fatalf("page %v of %v", ids, all)
			}
		}
	}
	for _, q := range []string{"?limit=wrongtype", "?skip=x", "?status=success,failed"} {
		e.get(t, fmt.Sprintf("/api/jobs/%d/tasks%s", j.ID, q), admin).want(t, 422)
	}
}
