// Package jobs runs condamesh's jobs: the channel actions of Quetz
// (generate_indexes, reindex, validate_packages, cleanup...) and jobs created
// with POST /api/jobs. Jobs and tasks are replicated catalog records; the
// runner executes them on the Raft leader only, so each run happens once in
// the cluster. After a restart, tasks left running are marked failed and
// their job runs again (every action is idempotent). A job cancelled while
// it runs has its run's context cancelled (cause ErrCancelled) within
// about 200 ms, on whichever node the cancel was written. The runner's job
// writes are conditional on the status it read (catalog PutJobOp.if_status):
// a job cancelled, or set pending again, between the runner's read and its
// write keeps the API's status (not run, or not rescheduled).
//
// A task's replicated record stays small whatever its action does: its
// progress is written at most every Config.ProgressInterval (and when it
// ends), and it keeps the first Config.TaskErrors errors and a count of
// all; every error goes to a node-local error log of the task
// (Config.ErrorLogDir), on the node that ran it.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/secret"
	"google.golang.org/protobuf/proto"
)

// ErrUnknownAction is the failure of a task whose manifest has no handler.
var ErrUnknownAction = errors.New("jobs: action not available")

// ErrCancelled is the failure of a task whose job was cancelled while it
// ran (PATCH /api/jobs/{id} {"status": "cancelled"}).
var ErrCancelled = errors.New("jobs: job cancelled")

// cancelPoll is how often the runner reads a running job's status to
// notice a cancel: the run's context ends within about this long.
const cancelPoll = 200 * time.Millisecond

// Proposer replicates catalog commands.
type Proposer interface {
	Propose(ctx context.Context, cmd *v1.Command) (any, error)
}

// versionGate is what a Proposer may also tell (cluster.Cluster does):
// whether every voter applies commands of a version. A Proposer without it
// applies every version this build proposes.
type versionGate interface {
	Applies(version uint32) bool
}

// Action executes one run of a job.
type Action func(ctx context.Context, job *v1.Job) error

// ItemAction executes a job on one package file its items_spec selected;
// job.Channel is the file's channel.
type ItemAction func(ctx context.Context, job *v1.Job, v *v1.PackageVersion) error

// Config configures a Runner.
type Config struct {
	// Interval between scheduling passes. Default 1 s.
	Interval time.Duration
	// ProgressInterval is the least time between two replicated writes of
	// a running task's progress (the last one is written when the task
	// ends). Default 2 s.
	ProgressInterval time.Duration
	// TaskErrors is how many errors (ReportError) a task's replicated
	// record keeps, each at most MaxErrorText bytes and together at most
	// TaskErrorBytes; the rest are counted (errors_total). Default 100; -1
	// keeps none.
	TaskErrors int
	// TaskErrorBytes bounds the errors a task's record keeps, together
	// (bytes), so that one progress write stays small. Default 16 KiB.
	TaskErrorBytes int
	// ErrorLogDir, if set, holds a node-local file per task with errors,
	// ErrorLogName(id), listing every error of the task, a line each.
	ErrorLogDir string
	// MaxErrorLog bounds one task's error log (bytes); later errors are
	// counted on its last line. Default 64 MiB.
	MaxErrorLog int64
	// ErrorLogs is how many task error logs are kept (the newest tasks').
	// Default 32.
	ErrorLogs int
	// Now returns the current time; tests replace it.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports settings that cannot work (zero values take the
// defaults).
func (c Config) Validate() error {
	var errs []error
	if c.Interval < 0 || c.ProgressInterval < 0 {
		errs = append(errs, fmt.Errorf("jobs: intervals must be positive (0: the default)"))
	}
	if c.TaskErrors < -1 {
		errs = append(errs, fmt.Errorf("jobs: task errors %d: want a count, 0 for the default or -1 for none", c.TaskErrors))
	}
	if c.MaxErrorLog < 0 || c.ErrorLogs < 0 || c.TaskErrorBytes < 0 {
		errs = append(errs, fmt.Errorf("jobs: error log bounds must be positive (0: the default)"))
	}
	return errors.Join(errs...)
}

// Leadership reports, on the Raft leader, a context that ends with the
// leadership and its term; ok is false on other nodes.
type Leadership func() (ctx context.Context, term uint64, ok bool)

// Runner turns pending jobs into tasks and runs them.
type Runner struct {
	cfg  Config
	cat  *catalog.Catalog
	prop Proposer
	lead Leadership
	log  *slog.Logger

	mu      sync.Mutex
	actions map[string]Action
	items   map[string]ItemAction
	wake    chan struct{}
}

// New returns a runner. lead gates execution to the Raft leader: a run
// happens under the leadership's context (a deposed leader's run is
// cancelled) and its job and task writes are fenced by its term.
func New(cfg Config, cat *catalog.Catalog, prop Proposer, lead Leadership) *Runner {
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = 2 * time.Second
	}
	switch cfg.TaskErrors {
	case 0:
		cfg.TaskErrors = 100
	case -1:
		cfg.TaskErrors = 0
	}
	if cfg.TaskErrorBytes == 0 {
		cfg.TaskErrorBytes = 16 << 10
	}
	if cfg.MaxErrorLog == 0 {
		cfg.MaxErrorLog = 64 << 20
	}
	if cfg.ErrorLogs == 0 {
		cfg.ErrorLogs = 32
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Runner{cfg: cfg, cat: cat, prop: prop, lead: lead, log: cfg.Logger.With("component", "jobs"), actions: map[string]Action{}, items: map[string]ItemAction{}, wake: make(chan struct{}, 1)}
}

// Register installs the handler of a manifest (an action name).
func (r *Runner) Register(manifest string, a Action) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.actions[manifest] = a
}

// RegisterItems installs how a manifest acts on one package file, for jobs
// with an items_spec. A manifest without one runs its channel action once
// on each channel holding selected files.
func (r *Runner) RegisterItems(manifest string, a ItemAction) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items[manifest] = a
}

// Known reports whether a manifest has a handler.
func (r *Runner) Known(manifest string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.actions[manifest]
	return ok
}

// Wake asks for a scheduling pass now.
func (r *Runner) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run schedules and executes jobs until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	var recovered uint64 // the term whose claim and recovery are done
	for {
		if lctx, term, ok := r.lead(); ok {
			run, cancel := context.WithCancel(context.WithValue(ctx, termKey{}, term))
			stop := context.AfterFunc(lctx, cancel) // leadership lost: stop the run
			// Claim (one Raft write) only once there is work: an idle
			// cluster writes nothing.
			if recovered != term && r.pending(run) && r.claim(run, term) == nil && r.recover(run) == nil {
				recovered = term
			}
			if recovered == term {
				if err := r.Pass(run); err != nil && run.Err() == nil {
					r.log.Error("job pass", "err", err)
				}
			}
			stop()
			cancel()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.wake:
		}
	}
}

// recover marks tasks a crash left running as failed and returns their
// jobs to pending.
func (r *Runner) recover(ctx context.Context) error {
	running, err := r.cat.Jobs(ctx, func(j *v1.Job) bool { return j.Status == "running" })
	if err != nil {
		return err
	}
	for _, j := range running {
		tasks, err := r.cat.Tasks(ctx, j.Id)
		if err != nil {
			return err
		}
		for _, t := range tasks {
			if t.Status == "running" || t.Status == "pending" || t.Status == "created" {
				t.Status, t.Message = "failed", "interrupted by a restart"
				if err := r.putTask(ctx, t); err != nil {
					return err
				}
			}
		}
		j.Status = "pending"
		if err := r.putJob(ctx, j, "running"); errors.Is(err, catalog.ErrStatusChanged) {
			continue // cancelled meanwhile: stays so
		} else if err != nil {
			return err
		}
		r.log.Warn("job interrupted by a restart, rescheduled", "job", j.Id, "manifest", j.Manifest)
	}
	return nil
}

// due reports whether a pending job should run now.
func (r *Runner) due(j *v1.Job, now time.Time) bool {
	if j.Status != "pending" {
		return false
	}
	if j.StartAtUnix != nil && now.Unix() < *j.StartAtUnix {
		return false
	}
	if j.RepeatEverySeconds != nil && j.LastRunUnix != 0 && now.Unix() < j.LastRunUnix+*j.RepeatEverySeconds {
		return false
	}
	return true
}

// Pass runs every due job once, in id order.
func (r *Runner) Pass(ctx context.Context) error {
	now := r.cfg.Now()
	jobs, err := r.cat.Jobs(ctx, func(j *v1.Job) bool { return r.due(j, now) })
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if err := r.runOnce(ctx, j); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) runOnce(ctx context.Context, j *v1.Job) error {
	j = proto.Clone(j).(*v1.Job)
	was := j.Status
	j.Status, j.LastRunUnix = "running", r.cfg.Now().Unix()
	if err := r.putJob(ctx, j, was); errors.Is(err, catalog.ErrStatusChanged) {
		// Cancelled (or changed otherwise) since this pass read it.
		r.log.Info("job not run: its status changed before its run began", "job", j.Id, "manifest", j.Manifest, "err", err)
		return nil
	} else if err != nil {
		return err
	}
	r.mu.Lock()
	act, item := r.actions[j.Manifest], r.items[j.Manifest]
	r.mu.Unlock()
	start := time.Now()
	work, stop := r.watchCancel(ctx, j.Id)
	defer stop()
	var runErr error
	if j.ItemsSpec != nil {
		var err error
		if runErr, err = r.runItems(ctx, work, j, act, item); err != nil {
			return err
		}
	} else {
		var err error
		if runErr, err = r.runTask(ctx, work, j, nil, func(ctx context.Context) error {
			if act == nil {
				return fmt.Errorf("%w: %s", ErrUnknownAction, j.Manifest)
			}
			return act(ctx, j)
		}); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: recover() reschedules it
	}
	j.Status = "success"
	if errors.Is(runErr, ErrCancelled) {
		r.log.Info("job cancelled", "job", j.Id, "manifest", j.Manifest, "channel", j.Channel, "after", time.Since(start))
	} else if runErr != nil {
		j.Status = "failed"
		r.log.Warn("job failed", "job", j.Id, "manifest", j.Manifest, "channel", j.Channel, "err", secret.Err(runErr))
	} else {
		r.log.Info("job done", "job", j.Id, "manifest", j.Manifest, "channel", j.Channel, "took", time.Since(start))
	}
	if j.RepeatEverySeconds != nil {
		j.Status = "pending"
	}
	if err := r.putJob(ctx, j, "running"); !errors.Is(err, catalog.ErrStatusChanged) {
		return err
	}
	return nil // cancelled, or set pending to run again, while it ran: that stays
}

// watchCancel returns a context of ctx that ends, with the cause
// ErrCancelled, once job id is cancelled, and the function that stops
// watching.
func (r *Runner) watchCancel(ctx context.Context, id int64) (context.Context, func()) {
	work, cancel := context.WithCancelCause(ctx)
	go func() {
		t := time.NewTicker(cancelPoll)
		defer t.Stop()
		for {
			select {
			case <-work.Done():
				return
			case <-t.C:
			}
			if j, err := r.cat.Job(work, id); err == nil && j.Status == "cancelled" {
				cancel(ErrCancelled)
				return
			}
		}
	}()
	return work, func() { cancel(nil) }
}

// runTask records a running task (for item, on that package file), runs
// fn under work (ctx, or a cancelled job's end) with progress reporting
// onto the task, and records its outcome (a cancelled run's task fails
// with ErrCancelled). It returns fn's error, and separately a failure to
// record the task.
func (r *Runner) runTask(ctx, work context.Context, j *v1.Job, item *v1.PackageVersion, fn func(ctx context.Context) error) (runErr, err error) {
	t := &v1.Task{JobId: j.Id, Status: "running"}
	if item != nil {
		t.VersionChannel, t.VersionPlatform, t.VersionFilename, t.VersionSha256 = item.Channel, item.Platform, item.Filename, item.Sha256
	}
	res, err := r.propose(ctx, &v1.Command{Op: &v1.Command_PutTask{PutTask: &v1.PutTaskOp{Task: t}}})
	if err != nil {
		return nil, err
	}
	cr, _ := res.(*catalog.Result)
	if cr == nil {
		return nil, fmt.Errorf("jobs: task not created")
	}
	t = proto.Clone(t).(*v1.Task)
	t.Id = cr.TaskID
	rep := &reporter{r: r, task: t}
	stop, flushed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(flushed)
		rep.flushEvery(ctx, r.cfg.ProgressInterval, stop)
	}()
	runErr = fn(context.WithValue(work, reporterKey{}, rep))
	close(stop)
	<-flushed
	task := rep.final()
	if ctx.Err() != nil {
		return runErr, ctx.Err()
	}
	if cause := context.Cause(work); errors.Is(cause, ErrCancelled) {
		runErr = cause
	}
	if kept := int64(len(task.Errors)); task.ErrorsTotal > kept && r.cfg.ErrorLogDir != "" {
		r.log.Warn("task errors", "task", task.Id, "job", j.Id, "errors", task.ErrorsTotal, "on the task", kept,
			"all in", filepath.Join(r.cfg.ErrorLogDir, ErrorLogName(task.Id)))
	}
	task.Status = "success"
	if runErr != nil {
		task.Status, task.Message = "failed", secret.Text(runErr.Error())
	}
	return runErr, r.putTask(ctx, task)
}

// runItems runs a job with an items_spec: one task per selected package
// file, acted on by the manifest's item action, or (without one) by its
// channel action run once per channel, whose outcome each file's task of
// that channel records. Files with an earlier task of the job that was not
// skipped are left out, unless the job repeats (Quetz: a forced re-run
// marks earlier tasks skipped). It returns the first failure.
func (r *Runner) runItems(ctx, work context.Context, j *v1.Job, act Action, item ItemAction) (runErr, err error) {
	spec, perr := ParseItemsSpec(j.GetItemsSpec())
	if perr != nil {
		return perr, nil
	}
	vers, err := r.selectItems(ctx, j, spec)
	if err != nil {
		return nil, err
	}
	byChannel := map[string]error{} // outcome of the channel action, per channel
	for _, v := range vers {
		if cause := context.Cause(work); errors.Is(cause, ErrCancelled) {
			return cause, nil // the files left get no task
		}
		each := proto.Clone(j).(*v1.Job)
		each.Channel = v.Channel
		failed, err := r.runTask(ctx, work, j, v, func(ctx context.Context) error {
			switch {
			case item != nil:
				return item(ctx, each, v)
			case act == nil:
				return fmt.Errorf("%w: %s", ErrUnknownAction, j.Manifest)
			}
			if done, ok := byChannel[v.Channel]; ok {
				return done
			}
			byChannel[v.Channel] = act(ctx, each)
			return byChannel[v.Channel]
		})
		if err != nil {
			return nil, err
		}
		if failed != nil && runErr == nil {
			runErr = fmt.Errorf("%s/%s/%s: %w", v.Channel, v.Platform, v.Filename, failed)
		}
	}
	return runErr, nil
}

// selectItems lists the package files the job's spec selects (of its
// channel, or of every channel), in channel, subdir and filename order,
// without those an earlier task of the job acted on.
func (r *Runner) selectItems(ctx context.Context, j *v1.Job, spec ItemsSpec) ([]*v1.PackageVersion, error) {
	done := map[string]bool{}
	if j.RepeatEverySeconds == nil {
		tasks, err := r.cat.Tasks(ctx, j.Id)
		if err != nil {
			return nil, err
		}
		for _, t := range tasks {
			if t.VersionFilename != "" && t.Status != "skipped" {
				done[catalog.ChannelKey(t.VersionChannel)+"/"+t.VersionPlatform+"/"+t.VersionFilename] = true
			}
		}
	}
	var chans []string
	if j.Channel != "" {
		chans = []string{j.Channel}
	} else {
		all, err := r.cat.Channels(ctx)
		if err != nil {
			return nil, err
		}
		for _, ch := range all {
			chans = append(chans, ch.Name)
		}
	}
	var out []*v1.PackageVersion
	for _, ch := range chans {
		vers, err := r.cat.Versions(ctx, ch, "")
		if err != nil {
			return nil, err
		}
		for _, v := range vers {
			if spec.Match(v) && !done[catalog.ChannelKey(v.Channel)+"/"+v.Platform+"/"+v.Filename] {
				out = append(out, v)
			}
		}
	}
	return out, nil
}

// termKey carries the leadership term a run is fenced with.
type termKey struct{}

// propose replicates a job runner's write, fenced with the run's term.
func (r *Runner) propose(ctx context.Context, cmd *v1.Command) (any, error) {
	cmd.FenceTerm, _ = ctx.Value(termKey{}).(uint64)
	return r.prop.Propose(ctx, cmd)
}

// pending reports a job to recover (left running) or to run now.
func (r *Runner) pending(ctx context.Context) bool {
	now := r.cfg.Now()
	jobs, err := r.cat.Jobs(ctx, func(j *v1.Job) bool { return j.Status == "running" || r.due(j, now) })
	return err == nil && len(jobs) > 0
}

// claim fences off every earlier leader's job writes.
func (r *Runner) claim(ctx context.Context, term uint64) error {
	_, err := r.prop.Propose(ctx, &v1.Command{Op: &v1.Command_ClaimJobs{ClaimJobs: &v1.ClaimJobsOp{Term: term}}})
	return err
}

// putJob replaces job j if its stored status is still ifStatus (else
// catalog.ErrStatusChanged): the runner never undoes a status the API set
// meanwhile. While a voter runs a build without conditional job writes,
// the write is unconditional, as it was then.
func (r *Runner) putJob(ctx context.Context, j *v1.Job, ifStatus string) error {
	cmd := &v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: j, IfStatus: ifStatus}}}
	if g, ok := r.prop.(versionGate); ok && !g.Applies(catalog.RequiredVersion(cmd)) {
		cmd.GetPutJob().IfStatus = ""
	}
	_, err := r.propose(ctx, cmd)
	return err
}

func (r *Runner) putTask(ctx context.Context, t *v1.Task) error {
	_, err := r.propose(ctx, &v1.Command{Op: &v1.Command_PutTask{PutTask: &v1.PutTaskOp{Task: t}}})
	return err
}
