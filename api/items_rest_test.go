package api_test

import (
	"context"
	"fmt"
	"github.com/condamesh/condamesh/node/nodetest"
	"net/http"
	"slices"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/store"
)

// tasksOf lists a job's tasks with the given statuses as
// "status channel/platform/filename" (channel actions: "status -").
func (e *env) tasksOf(t *testing.T, job int64, statuses ...string) []string {
	t.Helper()
	q := "?limit=-1"
	for _, s := range statuses {
		q += "&status=" + s
	}
	var out struct {
		Result []struct {
			Status         string         `json:"status"`
			PackageVersion map[string]any `json:"package_version"`
		} `json:"result"`
	}
	e.get(t, fmt.Sprintf("/api/jobs/%d/tasks%s", job, q), admin).want(t, 200).decode(t, &out)
	var got []string
	for _, task := range out.Result {
		pv := task.PackageVersion
		if len(pv) == 0 {
			got = append(got, task.Status+" -")
			continue
		}
		if pv["id"] == nil || pv["id"] == "" {
			t.Errorf("task package_version %v has no id", pv)
		}
		got = append(got, fmt.Sprint(task.Status, " ", pv["channel_name"], "/", pv["platform"], "/", pv["filename"]))
	}
	slices.Sort(got)
	return got
}

// Issue #9 point 22: POST /api/jobs selects the package files the job acts
// on with its items_spec (Quetz: one task per selected file; a re-run only
// takes files no earlier task acted on, unless forced).
func TestJobItemsSpec(t *testing.T) { inHTTPModes(t, testJobItemsSpec) }

func testJobItemsSpec(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	ctx := context.Background()
	e.newChannel(t, "items", false, admin)
	e.newChannel(t, "items2", false, admin)
	files := map[string]condatest.Spec{}
	up := func(ch string, s condatest.Spec) string {
		fn := condatest.Filename(s, ".conda")
		e.upload(t, admin, ch, fn, condatest.Conda(t, s)).want(t, 201)
		files[fn] = s
		return fn
	}
	keep := up("items", pkgSpec("keep-me", "1.0", "noarch"))
	old := up("items", pkgSpec("gone-a", "1.0", "noarch"))
	up("items2", pkgSpec("gone-a", "1.0", "noarch"))
	newer := up("items", pkgSpec("gone-a", "2.0", "noarch"))
	// The blobs of keep-me and gone-a 1.0 are lost; validate_packages
	// removes a file whose blob is missing, but only if selected.
	for _, fn := range []string{keep, old} {
		c, err := store.CIDFromHex(sha256Hex(condatest.Conda(t, files[fn])))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.n.Store().Delete(ctx, c); err != nil {
			t.Fatal(err)
		}
	}

	e.do(t, "POST", "/api/jobs", admin, map[string]any{"manifest": "validate_packages", "items_spec": "gone-a!=1"}, nil).wantErr(t, http.StatusUnprocessableEntity, "not implemented")
	e.do(t, "POST", "/api/jobs", admin, map[string]any{"manifest": "validate_packages", "items_spec": "gone/a"}, nil).wantErr(t, http.StatusUnprocessableEntity, "items_spec")

	var j jobOut
	e.do(t, "POST", "/api/jobs", admin, map[string]any{"manifest": "validate_packages", "items_spec": "gone-a<2"}, nil).want(t, 201).decode(t, &j)
	e.waitJob(t, j.ID, "success")
	want := []string{"success items/noarch/" + old, "success items2/noarch/" + old}
	if got := e.tasksOf(t, j.ID, "success", "failed"); !slices.Equal(got, want) {
		t.Fatalf("tasks %v, want %v", got, want)
	}
	names := func(ch string) []string {
		var out []string
		for _, v := range e.get(t, "/api/channels/"+ch+"/packages/gone-a/versions", admin).list(t) {
			out = append(out, fmt.Sprint(v["filename"]))
		}
		return out
	}
	if got := names("items"); !slices.Equal(got, []string{newer}) {
		t.Errorf("items: gone-a files %v, want only %s", got, newer)
	}
	e.get(t, "/api/channels/items2/packages/gone-a/versions", admin).want(t, 200)
	if got := names("items2"); len(got) != 0 {
		t.Errorf("items2: gone-a files %v, want none", got)
	}
	e.get(t, "/api/channels/items/packages/keep-me/versions/noarch/"+keep, admin).want(t, 200) // not selected: kept

	// A re-run takes only files no earlier task acted on.
	mid := up("items", pkgSpec("gone-a", "1.5", "noarch"))
	e.do(t, "PATCH", fmt.Sprintf("/api/jobs/%d", j.ID), admin, map[string]any{"status": "pending"}, nil).want(t, 200)
	e.waitJob(t, j.ID, "success")
	want = append(want, "success items/noarch/"+mid)
	slices.Sort(want)
	if got := e.tasksOf(t, j.ID, "success", "failed"); !slices.Equal(got, want) {
		t.Fatalf("after a re-run: tasks %v, want %v", got, want)
	}
	// Forced: earlier tasks skipped, every file still selected acted on.
	e.do(t, "PATCH", fmt.Sprintf("/api/jobs/%d", j.ID), admin, map[string]any{"status": "pending", "force": true}, nil).want(t, 200)
	e.waitJob(t, j.ID, "success")
	if got := e.tasksOf(t, j.ID, "success", "failed"); !slices.Equal(got, []string{"success items/noarch/" + mid}) {
		t.Errorf("after a forced re-run: tasks %v", got)
	}
	if got := e.tasksOf(t, j.ID, "skipped"); len(got) != 3 {
		t.Errorf("after a forced re-run: skipped %v, want 3", got)
	}

	// A manifest without a per-file action runs on the channels of the
	// selected files, one task per file; nothing selected: no task.
	e.do(t, "POST", "/api/jobs", admin, map[string]any{"manifest": "generate_indexes", "items_spec": "keep-*"}, nil).want(t, 201).decode(t, &j)
	e.waitJob(t, j.ID, "success")
	if got := e.tasksOf(t, j.ID, "success", "failed"); !slices.Equal(got, []string{"success items/noarch/" + keep}) {
		t.Errorf("generate_indexes keep-*: tasks %v", got)
	}
	e.do(t, "POST", "/api/jobs", admin, map[string]any{"manifest": "reindex", "items_spec": "nothing-matches"}, nil).want(t, 201).decode(t, &j)
	e.waitJob(t, j.ID, "success")
	if got := e.tasksOf(t, j.ID, "success", "failed", "skipped", "running", "created", "pending"); len(got) != 0 {
		t.Errorf("empty selection: tasks %v", got)
	}
}
