package jobs

import (
	"context"
	"sync"
	"time"
	"unicode/utf8"

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
	// Errors counts the per-item failures so far and LastError is the
	// newest; their texts reach the task through ReportError. Both are
	// for the action's own observers (mirror.Config.OnProgress).
	Errors    int64
	LastError string
}

// MaxErrorText bounds the text of one error kept on a task record (bytes);
// the error log has it whole.
const MaxErrorText = 1024

type reporterKey struct{}

// Report publishes the progress of the action running under ctx. It is
// replicated at most every Config.ProgressInterval, and when the task
// ends. Without a running job it does nothing.
func Report(ctx context.Context, p Progress) {
	if rep, ok := ctx.Value(reporterKey{}).(*reporter); ok {
		rep.report(p)
	}
}

// ReportError records a per-item failure of the action running under ctx
// that did not stop it: the task record keeps the first
// Config.TaskErrors of them (Config.TaskErrorBytes at most) and counts
// the rest, and the node's error log
// of the task (Config.ErrorLogDir) has them all. Without a running job it
// does nothing.
func ReportError(ctx context.Context, msg string) {
	if rep, ok := ctx.Value(reporterKey{}).(*reporter); ok {
		rep.fail(msg)
	}
}

// reporter keeps a running task's record and writes it when it changed,
// at most every interval.
type reporter struct {
	r    *Runner
	mu   sync.Mutex
	task *v1.Task
	errs *errorLog // nil until the first error
	// errBytes is the size of the errors kept on the task.
	errBytes int
	// dirty is set when the record changed since it was last written.
	dirty bool
}

func (rep *reporter) report(p Progress) {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	t := rep.task
	t.FilesTotal, t.FilesDone, t.BytesTotal, t.BytesDone, t.Current = p.FilesTotal, p.FilesDone, p.BytesTotal, p.BytesDone, secret.Text(p.Current)
	rep.dirty = true
}

func (rep *reporter) fail(msg string) {
	msg = secret.Text(msg) // they may quote upstream URLs
	rep.mu.Lock()
	defer rep.mu.Unlock()
	t := rep.task
	t.ErrorsTotal++
	if kept := truncateText(msg, MaxErrorText); len(t.Errors) < rep.r.cfg.TaskErrors && rep.errBytes+len(kept) <= rep.r.cfg.TaskErrorBytes {
		t.Errors = append(t.Errors, kept)
		rep.errBytes += len(kept)
	}
	rep.dirty = true
	if rep.errs == nil {
		rep.errs = rep.r.openErrorLog(t.Id)
	}
	rep.errs.write(msg)
}

// flushEvery writes the record every interval while it changes, until
// stop is closed.
func (rep *reporter) flushEvery(ctx context.Context, interval time.Duration, stop <-chan struct{}) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rep.mu.Lock()
		if !rep.dirty {
			rep.mu.Unlock()
			continue
		}
		rep.dirty = false
		t := proto.Clone(rep.task).(*v1.Task)
		rep.mu.Unlock()
		if err := rep.r.putTask(ctx, t); err != nil {
			rep.r.log.Debug("report progress", "task", t.Id, "err", err)
		}
	}
}

// final closes the error log and returns the task with the last progress
// applied.
func (rep *reporter) final() *v1.Task {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if rep.errs != nil {
		rep.errs.close()
	}
	return proto.Clone(rep.task).(*v1.Task)
}

// truncateText cuts s to at most max bytes, on a character boundary,
// marking the cut.
func truncateText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = " [...]"
	cut := max - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
