package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/condamesh/condamesh/api"
)

// TestSyncWaitPagesTasks: `channel sync --wait` follows a job whose tasks
// answered at once would be about 19 MB (60,000 tasks, as a job repeated
// for years has): it pages them (Quetz's skip and limit), never asks for
// them all, prints each task's end and each of its failed files once
// (its output is not a terminal here), and reports the newest.
func TestSyncWaitPagesTasks(t *testing.T) {
	const tasks, jobID = 60000, 7
	all := make([]api.TaskJSON, tasks)
	for i := range all {
		all[i] = api.TaskJSON{ID: int64(i + 1), JobID: jobID, Created: "2026-12-01T00:00:00", Status: "success", PackageVersion: map[string]any{},
			Progress: &api.TaskProgress{FilesTotal: tasks, FilesDone: int64(i + 1), Errors: []string{fmt.Sprintf("linux-64/pkg-1.%d-0.conda: upstream: not found: %s", i, strings.Repeat("x", 60))}, ErrorsTotal: 1}}
	}
	unpaged, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	var maxLimit, pages atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /api/channels/m/actions", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"id":%d,"status":"pending"}`, jobID)
	})
	mux.HandleFunc(fmt.Sprintf("GET /api/jobs/%d", jobID), func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"id":%d,"status":"success"}`, jobID)
	})
	mux.HandleFunc(fmt.Sprintf("GET /api/jobs/%d/tasks", jobID), func(w http.ResponseWriter, r *http.Request) {
		skip, limit := 0, 20
		if v := r.URL.Query().Get("skip"); v != "" {
			skip, _ = strconv.Atoi(v)
		}
		if v := r.URL.Query().Get("limit"); v != "" {
			limit, _ = strconv.Atoi(v)
		}
		pages.Add(1)
		if limit < 0 || limit > tasks {
			limit = tasks
		}
		if int64(limit) > maxLimit.Load() {
			maxLimit.Store(int64(limit))
		}
		pg := all[min(skip, tasks):min(skip+limit, tasks)]
		_ = json.NewEncoder(w).Encode(map[string]any{"pagination": map[string]int{"skip": skip, "limit": limit, "all_records_count": tasks}, "result": pg})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	t.Setenv("CONDAMESH_SERVER", srv.URL)
	t.Setenv("CONDAMESH_API_KEY", "a-key")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"channel", "sync", "m", "--wait"}, &out, &errb)
	t.Logf("%d task requests, the largest page %d tasks (all of them: %d MB)", pages.Load(), maxLimit.Load(), len(unpaged)>>20)
	if code != 0 {
		t.Fatalf("channel sync --wait: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), fmt.Sprintf("%d/%d files", tasks, tasks)) || !strings.Contains(out.String(), fmt.Sprintf("job %d succeeded", jobID)) {
		t.Fatalf("output does not report the newest task:\n%s", out.String())
	}
	for _, want := range []string{"task 1 success\n", "failed linux-64/pkg-1.0-0.conda: ", "task 60000 success\n", "failed linux-64/pkg-1.59999-0.conda: "} {
		if strings.Count(out.String(), want) != 1 {
			t.Errorf("%q printed %d times, want once", want, strings.Count(out.String(), want))
		}
	}
	if got := strings.Count(out.String(), "\nfailed "); got != tasks {
		t.Errorf("%d failed-file lines, want %d", got, tasks)
	}
	if maxLimit.Load() > 100 {
		t.Fatalf("asked for %d tasks at once", maxLimit.Load())
	}
}
