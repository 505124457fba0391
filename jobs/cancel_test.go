package jobs_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/jobs"
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
