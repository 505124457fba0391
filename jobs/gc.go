package jobs

import (
	"context"
	"errors"
	"time"

	"github.com/condamesh/condamesh/store"
	"github.com/ipfs/go-cid"
)

// Marker reports, through keep, blobs that are still referenced.
type Marker func(ctx context.Context, keep func(cid.Cid)) error

// Sweepable is the blob store as the sweep uses it.
type Sweepable interface {
	List(ctx context.Context, fn func(store.BlobInfo) error) error
	DeleteIfStale(ctx context.Context, c cid.Cid, cutoff time.Time) (bool, error)
}

// SweepResult tells what a sweep removed (or, dry, would remove).
type SweepResult struct {
	Blobs int
	Bytes int64
	// CIDs are the blobs removed (dry: that would be removed).
	CIDs []cid.Cid
}

// Sweep deletes blobs no marker references and that were not written or
// re-verified within grace before now. It is the only path that deletes
// blobs that may be referenced by records: request paths (uploads, mirror,
// proxy) never delete a blob they wrote, since a concurrent request may
// have published a record pointing to the same content-addressed blob.
// The grace period protects blobs between their Put and the command that
// references them (a Put of existing bytes re-verifies them, and the
// store checks the time and deletes atomically with respect to Put). Each
// node sweeps its own store.
func Sweep(ctx context.Context, st Sweepable, grace time.Duration, now time.Time, dry bool, markers ...Marker) (SweepResult, error) {
	live := map[cid.Cid]bool{}
	for _, m := range markers {
		if err := m(ctx, func(c cid.Cid) { live[c] = true }); err != nil {
			return SweepResult{}, err
		}
	}
	cutoff := now.Add(-grace)
	var doomed []store.BlobInfo
	err := st.List(ctx, func(b store.BlobInfo) error {
		if !live[b.CID] && b.Verified.Before(cutoff) {
			doomed = append(doomed, b)
		}
		return nil
	})
	if err != nil {
		return SweepResult{}, err
	}
	var res SweepResult
	for _, b := range doomed {
		if !dry {
			// A Put of the same bytes may have re-verified it since the
			// listing: DeleteIfStale looks again under the blob's lock.
			deleted, err := st.DeleteIfStale(ctx, b.CID, cutoff)
			if errors.Is(err, store.ErrNotFound) || err == nil && !deleted {
				continue
			}
			if err != nil {
				return res, err
			}
		}
		res.Blobs++
		res.Bytes += b.Size
		res.CIDs = append(res.CIDs, b.CID)
	}
	return res, nil
}
