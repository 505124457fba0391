package api

import (
	"context"
	"fmt"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
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
