package catalog

import (
	"context"
	"errors"
	"fmt"
	"time"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"google.golang.org/protobuf/proto"
)

// RequestWindow is how long the FSM remembers a command's request id (and
// its result): a forward retried within it applies once. The window is
// measured in command time (the proposer's clock), so every replica prunes
// the same ids.
const RequestWindow = 10 * time.Minute

// pruneBatch bounds how many expired request ids one command deletes, so
// no single apply does unbounded work; at one id per command the backlog
// never grows.
const pruneBatch = 64

// errorCodes names each sentinel for the trip from the leader to a
// follower (ApplyResult.error_code): the follower gets back an error that
// errors.Is the same sentinel, so every node maps it to the same status.
var errorCodes = []struct {
	code string
	err  error
}{
	{"not_found", ErrNotFound},
	{"exists", ErrExists},
	{"invalid", ErrInvalid},
	{"quota", ErrQuota},
	{"last_owner", ErrLastOwner},
	{"fenced", ErrFenced},
	{"status_changed", ErrStatusChanged},
}

// ErrApply is the kind of an error that has no catalog sentinel (a store
// failure on the leader) once it has travelled to a follower.
var ErrApply = errors.New("catalog: apply failed")

// codedError is an error rebuilt from its code and message.
type codedError struct {
	msg  string
	kind error
}

func (e *codedError) Error() string { return e.msg }
func (e *codedError) Unwrap() error { return e.kind }

// EncodeResult turns Apply's result into its wire form.
func EncodeResult(res any, err error) *v1.ApplyResult {
	out := &v1.ApplyResult{}
	if r, ok := res.(*Result); ok && r != nil {
		out.JobId, out.TaskId = r.JobID, r.TaskID
	}
	if err != nil {
		out.ErrorCode, out.ErrorMessage = "internal", err.Error()
		for _, c := range errorCodes {
			if errors.Is(err, c.err) {
				out.ErrorCode = c.code
				break
			}
		}
	}
	return out
}

// DecodeResult is EncodeResult's inverse: the result and an error that
// errors.Is the original sentinel.
func DecodeResult(r *v1.ApplyResult) (*Result, error) {
	res := &Result{JobID: r.GetJobId(), TaskID: r.GetTaskId()}
	if r.GetErrorCode() == "" {
		return res, nil
	}
	kind := ErrApply
	for _, c := range errorCodes {
		if c.code == r.GetErrorCode() {
			kind = c.err
		}
	}
	return res, &codedError{msg: r.GetErrorMessage(), kind: kind}
}

func kRequest(id string) []byte { return []byte("m/req/" + id) }
func kRequestTime(t int64, id string) []byte {
	return []byte(fmt.Sprintf("m/reqt/%020d/%s", t, id))
}

const requestTimePrefix = "m/reqt/"

// maxRequestID bounds a request id (ids come from proposers, possibly a
// hostile peer's).
const maxRequestID = 128

// repeated returns the remembered result of a command whose request id
// was applied before.
func (c *Catalog) repeated(ctx context.Context, cmd *v1.Command) (*Result, error, bool) {
	id := cmd.GetRequestId()
	if id == "" {
		return nil, nil, false
	}
	v, err := c.st.Get(ctx, kRequest(id))
	if err != nil {
		return nil, nil, false
	}
	var r v1.ApplyResult
	if proto.Unmarshal(v, &r) != nil {
		return nil, nil, false
	}
	res, opErr := DecodeResult(&r)
	return res, opErr, true
}

// remember stores a command's result under its request id and drops ids
// older than RequestWindow (at most pruneBatch of them).
func (a *applier) remember(cmd *v1.Command, res *Result, opErr error) error {
	id := cmd.GetRequestId()
	if id == "" || len(id) > maxRequestID {
		return nil
	}
	t := cmd.GetTimeUnixNano()
	cutoff := t - int64(RequestWindow)
	var old [][]byte
	stop := errors.New("stop")
	err := a.b.Scan(a.ctx, []byte(requestTimePrefix), func(k, _ []byte) error {
		var ts int64
		var rid string
		if _, err := fmt.Sscanf(string(k[len(requestTimePrefix):]), "%020d/", &ts); err != nil || ts >= cutoff || len(old) >= pruneBatch {
			return stop
		}
		rid = string(k[len(requestTimePrefix)+21:])
		old = append(old, k, kRequest(rid))
		return nil
	})
	if err != nil && !errors.Is(err, stop) {
		return err
	}
	for _, k := range old {
		if err := a.b.Delete(k); err != nil {
			return err
		}
	}
	v, err := proto.Marshal(EncodeResult(res, opErr))
	if err != nil {
		return err
	}
	if err := a.b.Set(kRequest(id), v); err != nil {
		return err
	}
	return a.b.Set(kRequestTime(t, id), nil)
}
