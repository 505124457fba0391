package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/secret"
	"github.com/condamesh/condamesh/jobs"
)

// jobJSON is Quetz's Job.
type jobJSON struct {
	ID                 int64   `json:"id"`
	Manifest           string  `json:"manifest"`
	OwnerID            string  `json:"owner_id"`
	Created            string  `json:"created"`
	Status             string  `json:"status"`
	ItemsSpec          *string `json:"items_spec"`
	StartAt            *string `json:"start_at"`
	RepeatEverySeconds *int64  `json:"repeat_every_seconds"`
}

func toJobJSON(j *v1.Job) jobJSON {
	out := jobJSON{ID: j.Id, Manifest: j.Manifest, OwnerID: j.OwnerId, Created: naive(j.CreatedUnix), Status: j.Status, ItemsSpec: j.ItemsSpec, RepeatEverySeconds: j.RepeatEverySeconds}
	if j.StartAtUnix != nil {
		t := naive(*j.StartAtUnix)
		out.StartAt = &t
	}
	return out
}

// actionKinds lists the channel kinds each action accepts.
var actionKinds = map[string][]string{
	"synchronize":          {"mirror"},
	"synchronize_repodata": {"mirror"},
	"synchronize_metrics":  {"local"},
	"reindex":              {"local", "mirror", "proxy"},
	"generate_indexes":     {"local", "mirror", "proxy"},
	"validate_packages":    {"local", "mirror", "proxy"},
	"cleanup":              {"local", "mirror", "proxy"},
	"cleanup_dry_run":      {"local", "mirror", "proxy"},
}

// scheduleAction checks and records a channel action as a pending job, in
// Quetz's order: kind (405, before authentication), identity (401), role (403).
func (s *Server) scheduleAction(ctx context.Context, id *identity, ch *v1.Channel, action string, startAt *time.Time, repeat *int64) (*v1.Job, error) {
	allowed := false
	for _, k := range actionKinds[action] {
		allowed = allowed || k == channelKind(ch)
	}
	if !allowed {
		return nil, apiErr(ErrNotAllowed, "Action %s not allowed for channel %s", action, ch.Name)
	}
	if id.anonymous() {
		return nil, errNotLoggedIn
	}
	var err error
	switch action {
	case "validate_packages":
		if !id.elevated() {
			err = errNoPermission
		}
	case "cleanup", "cleanup_dry_run":
		err = s.requireChannel(ctx, id, ch.Name, "owner")
	default:
		err = s.requireChannel(ctx, id, ch.Name, "owner", "maintainer")
	}
	if err != nil {
		return nil, err
	}
	job := &v1.Job{Manifest: action, OwnerId: id.user.Id, Status: "pending", Channel: ch.Name, RepeatEverySeconds: repeat}
	if startAt != nil {
		u := startAt.Unix()
		job.StartAtUnix = &u
	}
	res, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: job}}})
	if err != nil {
		return nil, err
	}
	r, _ := res.(*catalog.Result)
	if r == nil {
		return nil, fmt.Errorf("api: job not created")
	}
	return s.cat.Job(ctx, r.JobID)
}

func (s *Server) wakeJobs() {
	if s.jobs != nil {
		s.jobs.Wake()
	}
}

// restChannelAction is PUT /api/channels/{c}/actions.
func (s *Server) restChannelAction(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		ch, err := s.channelFor(ctx, id, r.PathValue("channel"))
		if err != nil {
			return 0, nil, err
		}
		fields, err := decodeBody(r)
		if err != nil {
			return 0, nil, err
		}
		var action string
		if ok, err := field(fields, "action", &action, "string"); err != nil {
			return 0, nil, err
		} else if !ok {
			return 0, nil, validation([]any{"body", "action"}, "missing", "Field required", nil)
		}
		if !channelActions[action] {
			return 0, nil, validation([]any{"body", "action"}, "enum", "Input should be a valid channel action", action)
		}
		startAt, repeat, err := scheduleFields(fields, id)
		if err != nil {
			return 0, nil, err
		}
		job, err := s.scheduleAction(ctx, id, ch, action, startAt, repeat)
		if err != nil {
			return 0, nil, err
		}
		s.wakeJobs()
		return http.StatusOK, toJobJSON(job), nil
	})
}

func scheduleFields(fields map[string]json.RawMessage, id *identity) (*time.Time, *int64, error) {
	var startAt *time.Time
	var raw string
	if ok, err := field(fields, "start_at", &raw, "datetime"); err != nil {
		return nil, nil, err
	} else if ok {
		t, err := parseNaive(raw)
		if err != nil {
			return nil, nil, validation([]any{"body", "start_at"}, "datetime_parsing", "Input should be a valid datetime", raw)
		}
		startAt = &t
	}
	var every int64
	ok, err := field(fields, "repeat_every_seconds", &every, "integer")
	if err != nil {
		return nil, nil, err
	}
	if ok {
		if every <= 0 {
			return nil, nil, validation([]any{"body", "repeat_every_seconds"}, "greater_than", "Input should be greater than 0", every)
		}
		if every < minRepeatSeconds && !id.serverOwner() {
			return nil, nil, validation([]any{"body", "repeat_every_seconds"}, "greater_than_equal", fmt.Sprintf("Input should be greater than or equal to %d", minRepeatSeconds), every)
		}
		return startAt, &every, nil
	}
	return startAt, nil, nil
}

// minRepeatSeconds is the shortest repeat_every_seconds a caller who is
// not a server owner may set: a repeated job makes server-side requests
// (synchronize_metrics calls every registered mirror).
const minRepeatSeconds = 60

var jobStatuses = map[string]bool{"pending": true, "queued": true, "running": true, "success": true, "failed": true, "timeout": true, "cancelled": true}
var taskStatuses = map[string]bool{"created": true, "pending": true, "running": true, "success": true, "failed": true, "skipped": true}

// statusFilter reads repeated ?status= parameters (the comma form and
// unknown values are 422, as in Quetz).
func statusFilter(r *http.Request, known map[string]bool, def ...string) (map[string]bool, error) {
	vals := r.URL.Query()["status"]
	if len(vals) == 0 {
		vals = def
	}
	out := map[string]bool{}
	for _, v := range vals {
		if !known[v] {
			return nil, validation([]any{"query", "status", 0}, "enum", "Input should be one of the known statuses", v)
		}
		out[v] = true
	}
	return out, nil
}

func (s *Server) restListJobs(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		if id.anonymous() {
			return 0, nil, errNotLoggedIn
		}
		want, err := statusFilter(r, jobStatuses, "pending", "running")
		if err != nil {
			return 0, nil, err
		}
		if _, _, err := page(r); err != nil {
			return 0, nil, err
		}
		jobs, err := s.cat.Jobs(r.Context(), func(j *v1.Job) bool {
			return want[j.Status] && (id.elevated() || j.OwnerId == id.user.Id)
		})
		if err != nil {
			return 0, nil, err
		}
		out := make([]jobJSON, 0, len(jobs))
		for _, j := range jobs {
			out = append(out, toJobJSON(j))
		}
		body, err := paginated(r, out)
		return http.StatusOK, body, err
	})
}

func (s *Server) restCreateJob(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		fields, err := decodeBody(r)
		if err != nil {
			return 0, nil, err
		}
		var manifest, items string
		if ok, err := field(fields, "manifest", &manifest, "string"); err != nil {
			return 0, nil, err
		} else if !ok {
			return 0, nil, validation([]any{"body", "manifest"}, "missing", "Field required", nil)
		}
		if ok, err := field(fields, "items_spec", &items, "string"); err != nil {
			return 0, nil, err
		} else if !ok {
			return 0, nil, validation([]any{"body", "items_spec"}, "string_type", "Input should be a valid string", nil)
		}
		if _, err := jobs.ParseItemsSpec(items); err != nil {
			return 0, nil, validation([]any{"body", "items_spec"}, "value_error", "Value error, "+err.Error(), items)
		}
		if s.jobs == nil || !s.jobs.Known(manifest) {
			return 0, nil, validation([]any{"body", "manifest"}, "value_error", fmt.Sprintf("Value error, invalid function %s: not a built-in job", manifest), manifest)
		}
		startAt, repeat, err := scheduleFields(fields, id)
		if err != nil {
			return 0, nil, err
		}
		if id.anonymous() || !id.elevated() {
			return 0, nil, apiErr(ErrUnauthenticated, "Not allowed")
		}
		job := &v1.Job{Manifest: manifest, OwnerId: id.user.Id, Status: "pending", ItemsSpec: &items, RepeatEverySeconds: repeat}
		if startAt != nil {
			u := startAt.Unix()
			job.StartAtUnix = &u
		}
		res, err := s.prop.Propose(r.Context(), &v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: job}}})
		if err != nil {
			return 0, nil, err
		}
		cr, _ := res.(*catalog.Result)
		if cr == nil {
			return 0, nil, fmt.Errorf("api: job not created")
		}
		created, err := s.cat.Job(r.Context(), cr.JobID)
		if err != nil {
			return 0, nil, err
		}
		s.wakeJobs()
		return http.StatusCreated, toJobJSON(created), nil
	})
}

func (s *Server) jobFor(ctx context.Context, id *identity, raw string) (*v1.Job, error) {
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return nil, validation([]any{"path", "id"}, "int_parsing", "Input should be a valid integer, unable to parse string as an integer", raw)
	}
	if id.anonymous() {
		return nil, errNotLoggedIn
	}
	j, err := s.cat.Job(ctx, n)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil, apiErr(ErrNotFound, "Job with id %d not found", n)
	}
	if err != nil {
		return nil, err
	}
	if !id.elevated() && j.OwnerId != id.user.Id {
		return nil, apiErr(ErrUnauthenticated, "Not allowed")
	}
	return j, nil
}

func (s *Server) restGetJob(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		j, err := s.jobFor(r.Context(), id, r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, toJobJSON(j), nil
	})
}

// restPatchJob sets a job's status (e.g. cancelled, or pending to run it
// again). force marks the job's earlier tasks skipped.
func (s *Server) restPatchJob(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		j, err := s.jobFor(ctx, id, r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		fields, err := decodeBody(r)
		if err != nil {
			return 0, nil, err
		}
		var status string
		var force bool
		if _, err := field(fields, "status", &status, "string"); err != nil {
			return 0, nil, err
		}
		if _, err := field(fields, "force", &force, "boolean"); err != nil {
			return 0, nil, err
		}
		if status == "" {
			return http.StatusOK, nil, nil
		}
		if !jobStatuses[status] {
			return 0, nil, validation([]any{"body", "status"}, "enum", "Input should be a job status", status)
		}
		if force && (status == "pending" || status == "running") {
			tasks, err := s.cat.Tasks(ctx, j.Id)
			if err != nil {
				return 0, nil, err
			}
			for _, t := range tasks {
				t.Status = "skipped"
				if _, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutTask{PutTask: &v1.PutTaskOp{Task: t}}}); err != nil {
					return 0, nil, err
				}
			}
		}
		j.Status = status
		if status == "pending" {
			j.LastRunUnix = 0
		}
		if _, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: j}}}); err != nil {
			return 0, nil, err
		}
		s.wakeJobs()
		return http.StatusOK, nil, nil
	})
}

// TaskJSON is a task in the jobs API (GET /api/jobs/{id}/tasks): Quetz's
// Task plus condamesh's message and progress. The CLI decodes it too.
type TaskJSON struct {
	ID             int64          `json:"id"`
	JobID          int64          `json:"job_id"`
	Created        string         `json:"created"`
	Status         string         `json:"status"`
	PackageVersion map[string]any `json:"package_version"`
	// condamesh extensions: why a task failed, and the progress of long
	// actions (mirror synchronisation).
	Message  string        `json:"message,omitempty"`
	Progress *TaskProgress `json:"progress,omitempty"`
}

// TaskProgress is the progress of a task in the jobs API.
type TaskProgress struct {
	FilesTotal int64  `json:"files_total"`
	FilesDone  int64  `json:"files_done"`
	BytesTotal int64  `json:"bytes_total"`
	BytesDone  int64  `json:"bytes_done"`
	Current    string `json:"current"`
	// Errors are the first errors of the task; ErrorsTotal counts them
	// all (the node that ran the task has them in its error log).
	Errors      []string `json:"errors"`
	ErrorsTotal int64    `json:"errors_total"`
}

func toTaskJSON(t *v1.Task) TaskJSON {
	// Task texts come from errors that may quote upstream URLs: masked
	// again here for records written before masking.
	out := TaskJSON{ID: t.Id, JobID: t.JobId, Created: naive(t.CreatedUnix), Status: t.Status, PackageVersion: map[string]any{}, Message: secret.Text(t.Message)}
	if t.VersionFilename != "" { // a task of an items_spec job: Quetz's filename and id, plus where
		out.PackageVersion = map[string]any{"filename": t.VersionFilename, "id": t.VersionSha256, "channel_name": t.VersionChannel, "platform": t.VersionPlatform}
	}
	if t.FilesTotal > 0 || t.BytesTotal > 0 || len(t.Errors) > 0 || t.ErrorsTotal > 0 {
		out.Progress = &TaskProgress{FilesTotal: t.FilesTotal, FilesDone: t.FilesDone, BytesTotal: t.BytesTotal, BytesDone: t.BytesDone, Current: secret.Text(t.Current),
			Errors: make([]string, 0, len(t.Errors)), ErrorsTotal: max(t.ErrorsTotal, int64(len(t.Errors)))}
		for _, e := range t.Errors {
			out.Progress.Errors = append(out.Progress.Errors, secret.Text(e))
		}
	}
	return out
}

// restListTasks is GET /api/jobs/{id}/tasks: the job's tasks of the
// asked statuses in id order, paged as Quetz does (skip, limit: default
// 20, -1 for all; the pagination envelope with all_records_count).
func (s *Server) restListTasks(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		j, err := s.jobFor(r.Context(), id, r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		want, err := statusFilter(r, taskStatuses, "created", "pending", "running")
		if err != nil {
			return 0, nil, err
		}
		tasks, err := s.cat.Tasks(r.Context(), j.Id)
		if err != nil {
			return 0, nil, err
		}
		kept := tasks[:0]
		for _, t := range tasks {
			if want[t.Status] {
				kept = append(kept, t)
			}
		}
		body, err := paginatedAs(r, kept, toTaskJSON)
		return http.StatusOK, body, err
	})
}
