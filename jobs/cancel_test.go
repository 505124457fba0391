package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/testlog"
	"github.com/condamesh/condamesh/jobs"
	"github.com/condamesh/condamesh/store/storetest"
)

// TestCancelEndsRun: a job cancelled while its action runs has the
// action's context end with jobs.ErrCancelled as the cause; its task
// fails as cancelled and the job stays cancelled.
func TestCancelEndsRun(t *testing.T) {
	started := make(chan int64, 1)
	var cause error
	r, cat, prop := newRunner(t, jobs.Config{}, func(ctx context.Context, j *v1.Job) error {
		started <- j.Id
		<-ctx.Done() // works until told to stop
		cause = context.Cause(ctx)
		return ctx.Err()
	})
	ctx := context.Background()
	go func() {
		id := <-started
		j, err := cat.Job(ctx, id)
		if err != nil {
			t.Error(err)
			return
		}
		j.Status = "cancelled" // as PATCH /api/jobs/{id} does
		if _, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: j}}}); err != nil {
			t.Error(err)
		}
	}()
	task := runJob(t, r, cat, prop)
	if !errors.Is(cause, jobs.ErrCancelled) {
		t.Fatalf("the action's context ended with %v, want ErrCancelled", cause)
	}
	if task.Status != "failed" || !strings.Contains(task.Message, "cancelled") {
		t.Fatalf("task %s %q, want failed as cancelled", task.Status, task.Message)
	}
	if j, err := cat.Job(ctx, task.JobId); err != nil || j.Status != "cancelled" {
		t.Fatalf("job %v (%v), want cancelled", j, err)
	}
}

// cancelJob sets job id cancelled, as PATCH /api/jobs/{id} does.
func cancelJob(t *testing.T, cat *catalog.Catalog, prop *applier, id int64) {
	t.Helper()
	ctx := context.Background()
	j, err := cat.Job(ctx, id)
	if err != nil {
		t.Error(err)
		return
	}
	j.Status = "cancelled"
	if _, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: j}}}); err != nil {
		t.Error(err)
	}
}

// TestCancelBetweenPassAndRun: a job cancelled after a pass read it as
// due but before its run was recorded is not run, and stays cancelled
// (the run's "running" write used to overwrite the cancel).
func TestCancelBetweenPassAndRun(t *testing.T) {
	var runs atomic.Int32
	r, cat, prop := newRunner(t, jobs.Config{}, func(ctx context.Context, j *v1.Job) error {
		runs.Add(1)
		return nil
	})
	ctx := context.Background()
	res, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Manifest: "act", Status: "pending"}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := res.(*catalog.Result).JobID
	var once sync.Once
	prop.beforeJob = func(cmd *v1.Command) {
		if cmd.GetPutJob().GetJob().GetStatus() == "running" {
			once.Do(func() { cancelJob(t, cat, prop, id) })
		}
	}
	if err := r.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if n := runs.Load(); n != 0 {
		t.Fatalf("the cancelled job ran %d times", n)
	}
	if j, err := cat.Job(ctx, id); err != nil || j.Status != "cancelled" {
		t.Fatalf("job %v (%v), want cancelled", j, err)
	}
	if tasks, err := cat.Tasks(ctx, id); err != nil || len(tasks) != 0 {
		t.Fatalf("tasks %v (%v), want none", tasks, err)
	}
}

// TestCancelAsRunEnds: a repeating job cancelled as its run ends (after
// the action returned, before the run's last write) stays cancelled
// rather than pending for its next run.
func TestCancelAsRunEnds(t *testing.T) {
	r, cat, prop := newRunner(t, jobs.Config{}, func(ctx context.Context, j *v1.Job) error { return nil })
	ctx := context.Background()
	every := int64(1)
	res, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Manifest: "act", Status: "pending", RepeatEverySeconds: &every}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := res.(*catalog.Result).JobID
	var once sync.Once
	prop.beforeJob = func(cmd *v1.Command) {
		if cmd.GetPutJob().GetJob().GetStatus() == "pending" { // the run's last write
			once.Do(func() { cancelJob(t, cat, prop, id) })
		}
	}
	if err := r.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if j, err := cat.Job(ctx, id); err != nil || j.Status != "cancelled" {
		t.Fatalf("job %v (%v), want cancelled", j, err)
	}
}

// oldVoters is a cluster with a voter whose build applies command version
// 1 only: it refuses a newer command as cluster.Propose does.
type oldVoters struct{ *applier }

func (o oldVoters) Applies(v uint32) bool { return v <= 1 }

func (o oldVoters) Propose(ctx context.Context, cmd *v1.Command) (any, error) {
	if v := catalog.RequiredVersion(cmd); v > 1 {
		return nil, fmt.Errorf("command version %d is not applied by every voter yet", v)
	}
	return o.applier.Propose(ctx, cmd)
}

// TestJobsRunBesideOlderVoters: while a voter applies only version 1, the
// runner's job writes are unconditional (as before version 2) and jobs
// still run.
func TestJobsRunBesideOlderVoters(t *testing.T) {
	ctx := context.Background()
	cat := catalog.New(storetest.OpenMem(t), nil)
	prop := oldVoters{&applier{cat: cat}}
	r := jobs.New(jobs.Config{Logger: testlog.New(t, 0)}, cat, prop, func() (context.Context, uint64, bool) { return ctx, 1, true })
	var runs atomic.Int32
	r.Register("act", func(ctx context.Context, j *v1.Job) error { runs.Add(1); return nil })
	res, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Manifest: "act", Status: "pending"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if j, err := cat.Job(ctx, res.(*catalog.Result).JobID); runs.Load() != 1 || err != nil || j.Status != "success" {
		t.Fatalf("runs %d, job %v (%v), want one run and success", runs.Load(), j, err)
	}
}
