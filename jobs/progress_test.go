package jobs_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/testlog"
	"github.com/condamesh/condamesh/jobs"
	"github.com/condamesh/condamesh/store/storetest"
	"google.golang.org/protobuf/proto"
)

// applier proposes by applying to the catalog at once (a one-node cluster
// without Raft), counting the task writes and their bytes.
type applier struct {
	cat        *catalog.Catalog
	mu         sync.Mutex
	idx        uint64
	taskWrites int
	taskBytes  int
	// beforeJob, if set, runs before a job write is applied (outside mu:
	// it may propose).
	beforeJob func(cmd *v1.Command)
}

func (a *applier) Propose(ctx context.Context, cmd *v1.Command) (any, error) {
	a.mu.Lock()
	hook := a.beforeJob
	a.mu.Unlock()
	if hook != nil && cmd.GetPutJob() != nil {
		hook(cmd)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.idx++
	cmd.TimeUnixNano = time.Now().UnixNano()
	if cmd.GetPutTask() != nil {
		a.taskWrites++
		a.taskBytes += proto.Size(cmd)
	}
	return a.cat.Apply(ctx, a.idx, cmd)
}

func (a *applier) counts() (int, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.taskWrites, a.taskBytes
}

// newRunner returns a runner leading alone over an in-memory catalog, with
// the action "act" registered.
func newRunner(t *testing.T, cfg jobs.Config, act jobs.Action) (*jobs.Runner, *catalog.Catalog, *applier) {
	t.Helper()
	ctx := context.Background()
	cat := catalog.New(storetest.OpenMem(t), nil)
	prop := &applier{cat: cat}
	cfg.Logger = testlog.New(t, 0)
	r := jobs.New(cfg, cat, prop, func() (context.Context, uint64, bool) { return ctx, 1, true })
	r.Register("act", act)
	return r, cat, prop
}

// runJob records a pending job of "act", runs a pass and returns the
// job's last task.
func runJob(t *testing.T, r *jobs.Runner, cat *catalog.Catalog, prop *applier) *v1.Task {
	t.Helper()
	ctx := context.Background()
	res, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Manifest: "act", Status: "pending"}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := res.(*catalog.Result).JobID
	if err := r.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	tasks, err := cat.Tasks(ctx, id)
	if err != nil || len(tasks) == 0 {
		t.Fatalf("job %d: tasks %v (%v)", id, tasks, err)
	}
	return tasks[len(tasks)-1]
}

// TestTaskRecordBounded: an action reporting 20,000 errors of 2 KB and
// progress all the time leaves a task record with the first TaskErrors
// errors (each cut to MaxErrorText) and a count of them all; progress is
// written at most every ProgressInterval plus at the end; the error log
// has every error.
func TestTaskRecordBounded(t *testing.T) {
	const errs, kept, interval, runFor = 20000, 10, 50 * time.Millisecond, 500 * time.Millisecond
	dir := t.TempDir()
	long := strings.Repeat("x", 2000)
	var took time.Duration
	r, cat, prop := newRunner(t, jobs.Config{ProgressInterval: interval, TaskErrors: kept, ErrorLogDir: dir}, func(ctx context.Context, _ *v1.Job) error {
		start := time.Now()
		for i := range errs {
			jobs.ReportError(ctx, fmt.Sprintf("file %d failed: %s", i, long))
			jobs.Report(ctx, jobs.Progress{FilesTotal: errs, FilesDone: int64(i + 1)})
		}
		for time.Since(start) < runFor { // progress on and on
			jobs.Report(ctx, jobs.Progress{FilesTotal: errs, FilesDone: errs, Current: time.Now().String()})
			time.Sleep(time.Millisecond)
		}
		took = time.Since(start)
		return nil
	})
	task := runJob(t, r, cat, prop)
	writes, bytes := prop.counts()
	t.Logf("%d task writes, %d bytes, over %v", writes, bytes, took)
	// created, at most one per interval while running, the end.
	if max := 2 + int(took/interval) + 1; writes > max {
		t.Errorf("%d task writes in %v, want at most %d (every %v)", writes, took, max, interval)
	}
	if bound := writes * (kept*(jobs.MaxErrorText+16) + 512); bytes > bound {
		t.Errorf("task writes carried %d bytes, bound %d", bytes, bound)
	}
	if task.Status != "success" || task.ErrorsTotal != errs || len(task.Errors) != kept || task.FilesDone != errs {
		t.Fatalf("task %s: %d errors counted, %d kept, %d files done", task.Status, task.ErrorsTotal, len(task.Errors), task.FilesDone)
	}
	for i, e := range task.Errors {
		if len(e) > jobs.MaxErrorText || !strings.HasPrefix(e, fmt.Sprintf("file %d failed: ", i)) {
			t.Fatalf("kept error %d: %d bytes, %.40q", i, len(e), e)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, jobs.ErrorLogName(task.Id)))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != errs || lines[errs-1] != fmt.Sprintf("file %d failed: %s", errs-1, long) {
		t.Fatalf("error log: %d lines, last %.60q", len(lines), lines[len(lines)-1])
	}
}

// TestErrorLogBounds: a task's error log stops at MaxErrorLog bytes and
// says how many errors it left out; only the newest ErrorLogs logs are
// kept.
func TestErrorLogBounds(t *testing.T) {
	dir := t.TempDir()
	r, cat, prop := newRunner(t, jobs.Config{ErrorLogDir: dir, MaxErrorLog: 100, ErrorLogs: 2}, func(ctx context.Context, _ *v1.Job) error {
		for i := range 50 {
			jobs.ReportError(ctx, fmt.Sprintf("error %02d", i)) // 9 bytes a line
		}
		return nil
	})
	var ids []int64
	for range 3 {
		ids = append(ids, runJob(t, r, cat, prop).Id)
	}
	b, err := os.ReadFile(filepath.Join(dir, jobs.ErrorLogName(ids[2])))
	if err != nil {
		t.Fatal(err)
	}
	if want := "error 10\n... 39 more errors not written (the log is bounded to 100 bytes)\n"; !strings.HasSuffix(string(b), want) || strings.Count(string(b), "\n") != 12 {
		t.Fatalf("bounded error log:\n%s", b)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{jobs.ErrorLogName(ids[1]), jobs.ErrorLogName(ids[2])}; fmt.Sprint(names) != fmt.Sprint(want) {
		t.Fatalf("error logs %v, want the newest two %v", names, want)
	}
}

// TestTaskErrorBytes: the errors a task keeps stay within TaskErrorBytes
// together, however many TaskErrors allows.
func TestTaskErrorBytes(t *testing.T) {
	r, cat, prop := newRunner(t, jobs.Config{TaskErrorBytes: 3000}, func(ctx context.Context, _ *v1.Job) error {
		for i := range 10 {
			jobs.ReportError(ctx, fmt.Sprintf("%d %s", i, strings.Repeat("y", 5000)))
		}
		return nil
	})
	task := runJob(t, r, cat, prop)
	if len(task.Errors) != 2 || len(task.Errors[0])+len(task.Errors[1]) > 3000 || task.ErrorsTotal != 10 {
		t.Fatalf("kept %d errors of %d, want the 2 that fit in 3000 bytes", len(task.Errors), task.ErrorsTotal)
	}
}
