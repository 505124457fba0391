package jobs

import (
	"context"
	"sync"
	"time"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/secret"
	"google.golang.org/protobuf/proto"
)

// Progress is what a running action reports about itself. It is stored on
// the job's task and visible in the jobs API.
type Progress struct {
	FilesTotal, FilesDone int64
	BytesTotal, BytesDone int64
	Current               string
	Errors                []string // per-item failures that did not stop the action
}

type reporterKey struct{}

// Report publishes the progress of the action running under ctx (rate
// limited; the last report is always kept). Without a running job it does
// nothing.
func Report(ctx context.Context, p Progress) {
	if rep, ok := ctx.Value(reporterKey{}).(*reporter); ok {
		rep.report(ctx, p)
	}
}

// reporter writes progress onto a task at most every interval.
type reporter struct {
	r        *Runner
	interval time.Duration
	mu       sync.Mutex
	task     *v1.Task
	last     time.Time
}

func (rep *reporter) apply(p Progress) {
	t := rep.task
	t.FilesTotal, t.FilesDone, t.BytesTotal, t.BytesDone, t.Current = p.FilesTotal, p.FilesDone, p.BytesTotal, p.BytesDone, p.Current
	t.Errors = t.Errors[:0]
	for _, e := range p.Errors {
		t.Errors = append(t.Errors, secret.Text(e)) // they may quote upstream URLs
	}
}

func (rep *reporter) report(ctx context.Context, p Progress) {
	rep.mu.Lock()
	rep.apply(p)
	if time.Since(rep.last) < rep.interval {
		rep.mu.Unlock()
		return
	}
	rep.last = time.Now()
	t := proto.Clone(rep.task).(*v1.Task)
	rep.mu.Unlock()
	if err := rep.r.putTask(ctx, t); err != nil {
		rep.r.log.Debug("report progress", "task", t.Id, "err", err)
	}
}

// final returns the task with the last progress applied.
func (rep *reporter) final() *v1.Task {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return proto.Clone(rep.task).(*v1.Task)
}
