package catalog

import "errors"

// Sentinel errors. Apply returns them as the command's result; they never
// leave partial state behind.
var (
	// ErrNotFound: the channel, package, version, user, key or job does not exist.
	ErrNotFound = errors.New("catalog: not found")
	// ErrExists: a channel, package or (without force) package file already exists.
	ErrExists = errors.New("catalog: already exists")
	// ErrInvalid: the command is malformed.
	ErrInvalid = errors.New("catalog: invalid command")
	// ErrQuota: the change would put the channel above its size limit.
	ErrQuota = errors.New("catalog: above quota")
	// ErrFenced: a job runner's write from a term that lost the jobs to a
	// newer leader.
	ErrFenced = errors.New("catalog: job write from a deposed leader")
	// ErrStatusChanged: a job's status is no longer the one the command
	// expected (PutJobOp.if_status): it was changed meanwhile.
	ErrStatusChanged = errors.New("catalog: the job's status changed meanwhile")
	// ErrLastOwner: the change would leave the server without an owner.
	ErrLastOwner = errors.New("catalog: the last server owner cannot be demoted or removed")
)
