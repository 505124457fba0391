package store

import (
	"errors"
	"fmt"
)

// Sentinel errors returned by the store. Callers test them with errors.Is.
var (
	// ErrNotFound is returned when a key or blob does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("store: closed")
	// ErrDigestMismatch is returned (wrapped in *DigestMismatchError) when the
	// bytes written do not hash to the digest the caller expected.
	ErrDigestMismatch = errors.New("store: digest mismatch")
	// ErrTooLarge is returned when a blob exceeds PutOptions.MaxSize.
	ErrTooLarge = errors.New("store: blob too large")
	// ErrSizeMismatch is returned when a blob's length differs from PutOptions.WantSize.
	ErrSizeMismatch = errors.New("store: size mismatch")
	// ErrBadSnapshot is returned by Restore for a snapshot stream it cannot read.
	ErrBadSnapshot = errors.New("store: bad snapshot")
	// ErrBadKey is returned for keys outside the caller-writable prefixes.
	ErrBadKey = errors.New("store: bad key")
)

// DigestMismatchError reports the expected and the actual sha256 of a blob.
type DigestMismatchError struct {
	Want, Got string // hex sha256
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("store: digest mismatch: want sha256 %s, got %s", e.Want, e.Got)
}

// Unwrap lets errors.Is(err, ErrDigestMismatch) succeed.
func (e *DigestMismatchError) Unwrap() error { return ErrDigestMismatch }
