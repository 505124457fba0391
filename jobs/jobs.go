// Package jobs runs condamesh's jobs: the channel actions of Quetz
// (generate_indexes, reindex, validate_packages, cleanup...) and jobs created
// with POST /api/jobs. Jobs and tasks are replicated catalog records; the
// runner executes them on the Raft leader only, so each run happens once in
// the cluster. After a restart, tasks left running are marked failed and
// their job runs again (every action is idempotent).
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/secret"
	"google.golang.org/protobuf/proto"
)

// ErrUnknownAction is the failure of a task whose manifest has no handler.
var ErrUnknownAction = errors.New("jobs: action not available")

// Proposer replicates catalog commands.
type Proposer interface {
	Propose(ctx context.Context, cmd *v1.Command) (any, error)
}

// Action executes one run of a job.
type Action func(ctx context.Context, job *v1.Job) error

// Config configures a Runner.
type Config struct {
	// Interval between scheduling passes. Default 1 s.
	Interval time.Duration
	// ProgressInterval is the least time between two progress writes of a
	// task. Default 1 s.
	ProgressInterval time.Duration
	// Now returns the current time; tests replace it.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Runner turns pending jobs into tasks and runs them.
type Runner struct {
	cfg      Config
	cat      *catalog.Catalog
	prop     Proposer
	isLeader func() bool
	log      *slog.Logger

	mu      sync.Mutex
	actions map[string]Action
	wake    chan struct{}
}

// New returns a runner. isLeader gates execution to the Raft leader.
func New(cfg Config, cat *catalog.Catalog, prop Proposer, isLeader func() bool) *Runner {
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Runner{cfg: cfg, cat: cat, prop: prop, isLeader: isLeader, log: cfg.Logger.With("component", "jobs"), actions: map[string]Action{}, wake: make(chan struct{}, 1)}
}

// Register installs the handler of a manifest (an action name).
func (r *Runner) Register(manifest string, a Action) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.actions[manifest] = a
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
	recovered := false
	for {
		if r.isLeader() {
			if !recovered {
				recovered = r.recover(ctx) == nil
			}
			if err := r.Pass(ctx); err != nil && ctx.Err() == nil {
				r.log.Error("job pass", "err", err)
			}
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
		if err := r.putJob(ctx, j); err != nil {
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
	j.Status, j.LastRunUnix = "running", r.cfg.Now().Unix()
	if err := r.putJob(ctx, j); err != nil {
		return err
	}
	res, err := r.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutTask{PutTask: &v1.PutTaskOp{Task: &v1.Task{JobId: j.Id, Status: "running"}}}})
	if err != nil {
		return err
	}
	cr, _ := res.(*catalog.Result)
	if cr == nil {
		return fmt.Errorf("jobs: task not created")
	}
	rep := &reporter{r: r, interval: r.cfg.ProgressInterval, task: &v1.Task{Id: cr.TaskID, JobId: j.Id, Status: "running"}}
	r.mu.Lock()
	act := r.actions[j.Manifest]
	r.mu.Unlock()
	start := time.Now()
	var runErr error
	if act == nil {
		runErr = fmt.Errorf("%w: %s", ErrUnknownAction, j.Manifest)
	} else {
		runErr = act(context.WithValue(ctx, reporterKey{}, rep), j)
	}
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: recover() reschedules it
	}
	task := rep.final()
	task.Status, j.Status = "success", "success"
	if runErr != nil {
		task.Status, task.Message, j.Status = "failed", secret.Text(runErr.Error()), "failed"
		r.log.Warn("job failed", "job", j.Id, "manifest", j.Manifest, "channel", j.Channel, "err", secret.Err(runErr))
	} else {
		r.log.Info("job done", "job", j.Id, "manifest", j.Manifest, "channel", j.Channel, "took", time.Since(start))
	}
	if j.RepeatEverySeconds != nil {
		j.Status = "pending"
	}
	if cur, err := r.cat.Job(ctx, j.Id); err == nil && cur.Status == "cancelled" {
		j.Status = "cancelled"
	}
	if err := r.putTask(ctx, task); err != nil {
		return err
	}
	return r.putJob(ctx, j)
}

func (r *Runner) putJob(ctx context.Context, j *v1.Job) error {
	_, err := r.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: j}}})
	return err
}

func (r *Runner) putTask(ctx context.Context, t *v1.Task) error {
	_, err := r.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutTask{PutTask: &v1.PutTaskOp{Task: t}}})
	return err
}
