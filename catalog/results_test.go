package catalog_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

// raw applies cmd at the next index with the time given and returns
// Apply's result.
func (r *rig) raw(cmd *v1.Command, at int64) (*catalog.Result, error) {
	r.idx++
	cmd.TimeUnixNano = at
	return r.cat.Apply(context.Background(), r.idx, cmd)
}

func dl(node string, seq uint64, n int64) *v1.Command {
	return &v1.Command{Op: &v1.Command_AddDownloads{AddDownloads: &v1.AddDownloadsOp{NodeId: node, Seq: seq, Counts: []*v1.DownloadCount{
		{Channel: "c", Platform: "noarch", Filename: "f-1-0.conda", HourUnix: 1_700_000_000 / 3600 * 3600, Count: n},
	}}}}
}

// TestRequestIDAppliesOnce: a command repeated with its request id (a
// forward retried after an ambiguous failure) applies once and answers
// the first result again, error included; after RequestWindow the id is
// forgotten.
func TestRequestIDAppliesOnce(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	t0 := int64(1_700_000_000_000_000_000)
	create := func(id string) *v1.Command {
		return &v1.Command{RequestId: id, Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}}
	}
	if _, err := r.raw(create("req-1"), t0); err != nil {
		t.Fatal(err)
	}
	// The same request again: the first answer (success), no conflict.
	if _, err := r.raw(create("req-1"), t0+1); err != nil {
		t.Fatalf("repeated request: %v", err)
	}
	// Another request creating the same channel conflicts, and its repeat
	// answers the same conflict.
	if _, err := r.raw(create("req-2"), t0+2); !errors.Is(err, catalog.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	if _, err := r.raw(create("req-2"), t0+3); !errors.Is(err, catalog.ErrExists) {
		t.Fatalf("repeat of the failed create: %v, want the same ErrExists", err)
	}
	// Counts: a job result travels too (PutJob answers the job id).
	job := &v1.Command{RequestId: "req-job", Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Manifest: "reindex", Status: "pending"}}}}
	a, err := r.raw(job, t0+4)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.raw(job, t0+5)
	if err != nil || b.JobID != a.JobID {
		t.Fatalf("repeated job: %v %v, want job %d", b, err, a.JobID)
	}
	if jobs, _ := r.cat.Jobs(ctx, func(*v1.Job) bool { return true }); len(jobs) != 1 {
		t.Fatalf("%d jobs after a repeated create, want 1", len(jobs))
	}
	// Past the window the id is forgotten (pruned by later commands).
	later := t0 + int64(catalog.RequestWindow) + int64(time.Second)
	if _, err := r.raw(&v1.Command{RequestId: "req-3", Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "d"}}}}, later); err != nil {
		t.Fatal(err)
	}
	if _, err := r.raw(create("req-1"), later+1); !errors.Is(err, catalog.ErrExists) {
		t.Fatalf("request id past the window: %v, want it applied anew (ErrExists)", err)
	}
}

// TestDownloadSeqCountsOnce: a node's download batch is applied once per
// sequence number; other nodes' batches count separately.
func TestDownloadSeqCountsOnce(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}})
	t0 := int64(1_700_000_000_000_000_000)
	for _, c := range []*v1.Command{dl("n1", 1, 5), dl("n1", 1, 5), dl("n2", 1, 7), dl("n1", 2, 1), dl("n1", 1, 5)} {
		if _, err := r.raw(c, t0); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := r.cat.DownloadTotal(ctx, "c", "noarch", "f-1-0.conda"); got != 13 {
		t.Fatalf("total %d, want 13 (5 + 7 + 1)", got)
	}
	if s, _ := r.cat.DownloadSeq(ctx, "n1"); s != 2 {
		t.Fatalf("n1 seq %d, want 2", s)
	}
}

// TestJobsFencedByTerm: after the leader of term 3 claims the jobs, job
// and task writes fenced with an older term are refused and change
// nothing; unfenced writes (the API's) and the new term's go through.
func TestJobsFencedByTerm(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	t0 := int64(1_700_000_000_000_000_000)
	res, err := r.raw(&v1.Command{FenceTerm: 2, Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Manifest: "reindex", Status: "pending"}}}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.raw(&v1.Command{Op: &v1.Command_ClaimJobs{ClaimJobs: &v1.ClaimJobsOp{Term: 3}}}, t0); err != nil {
		t.Fatal(err)
	}
	stale := &v1.Command{FenceTerm: 2, Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Id: res.JobID, Manifest: "reindex", Status: "success"}}}}
	if _, err := r.raw(stale, t0); !errors.Is(err, catalog.ErrFenced) {
		t.Fatalf("deposed leader's write: %v, want ErrFenced", err)
	}
	if _, err := r.raw(&v1.Command{FenceTerm: 2, Op: &v1.Command_PutTask{PutTask: &v1.PutTaskOp{Task: &v1.Task{JobId: res.JobID, Status: "running"}}}}, t0); !errors.Is(err, catalog.ErrFenced) {
		t.Fatalf("deposed leader's task: %v, want ErrFenced", err)
	}
	if j, _ := r.cat.Job(ctx, res.JobID); j.Status != "pending" {
		t.Fatalf("job status %q after a fenced write", j.Status)
	}
	// A claim of an older term does not move the fence back.
	if _, err := r.raw(&v1.Command{Op: &v1.Command_ClaimJobs{ClaimJobs: &v1.ClaimJobsOp{Term: 1}}}, t0); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*v1.Command{
		{FenceTerm: 3, Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Id: res.JobID, Manifest: "reindex", Status: "running"}}}},
		{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Id: res.JobID, Manifest: "reindex", Status: "cancelled"}}}},
	} {
		if _, err := r.raw(c, t0); err != nil {
			t.Fatalf("current write: %v", err)
		}
	}
	if _, err := r.raw(stale, t0); !errors.Is(err, catalog.ErrFenced) {
		t.Fatalf("after an older claim: %v, want ErrFenced", err)
	}
}

// TestPutJobIfStatus: a job write conditional on the stored status
// applies while that status holds and otherwise fails with
// ErrStatusChanged, changing nothing; the error survives the trip to a
// follower; a new job cannot be conditional.
func TestPutJobIfStatus(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	t0 := int64(1_700_000_000_000_000_000)
	res, err := r.raw(&v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Manifest: "reindex", Status: "pending"}}}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	put := func(status, ifStatus string) error {
		_, err := r.raw(&v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Id: res.JobID, Manifest: "reindex", Status: status}, IfStatus: ifStatus}}}, t0)
		return err
	}
	if err := put("running", "pending"); err != nil {
		t.Fatalf("running if pending: %v", err)
	}
	if err := put("cancelled", ""); err != nil { // the API's
		t.Fatal(err)
	}
	err = put("success", "running")
	if !errors.Is(err, catalog.ErrStatusChanged) {
		t.Fatalf("success if running, the job cancelled: %v, want ErrStatusChanged", err)
	}
	if _, derr := catalog.DecodeResult(catalog.EncodeResult(nil, err)); !errors.Is(derr, catalog.ErrStatusChanged) {
		t.Fatalf("decoded on a follower: %v", derr)
	}
	if j, _ := r.cat.Job(ctx, res.JobID); j.Status != "cancelled" {
		t.Fatalf("job %q after a refused write, want cancelled", j.Status)
	}
	if _, err := r.raw(&v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{Job: &v1.Job{Manifest: "reindex", Status: "pending"}, IfStatus: "pending"}}}, t0); !errors.Is(err, catalog.ErrInvalid) {
		t.Fatalf("a new job with an expected status: %v, want ErrInvalid", err)
	}
	if v := catalog.RequiredVersion(&v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{IfStatus: "running"}}}); v != 2 {
		t.Fatalf("a conditional job write needs version %d, want 2", v)
	}
	if v := catalog.RequiredVersion(&v1.Command{Op: &v1.Command_PutJob{PutJob: &v1.PutJobOp{}}}); v != 1 {
		t.Fatalf("a job write needs version %d, want 1", v)
	}
}
