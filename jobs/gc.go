package jobs

import (
	"context"
	"time"

	"github.com/condamesh/condamesh/store"
	"github.com/ipfs/go-cid"
)

// Marker reports, through keep, blobs that are still referenced.
type Marker func(ctx context.Context, keep func(cid.Cid)) error

// Sweepable is the blob store as the sweep uses it.
type Sweepable interface {
	List(ctx context.Context, fn func(store.BlobInfo) error) error
	Stat(ctx context.Context, c cid.Cid) (store.BlobInfo, error)
	Delete(ctx context.Context, c cid.Cid) error
}

func statOf(ctx context.Context, st Sweepable, c cid.Cid) (time.Time, error) {
	b, err := st.Stat(ctx, c)
	return b.Verified, err
}

// SweepResult tells what a sweep removed (or, dry, would remove).
type SweepResult struct {
	Blobs int
	Bytes int64
}

// Sweep deletes blobs no marker references and that were not written or
// re-verified within grace before now. The grace period protects blobs
// between their upload and the command that references them (a Put of
// existing bytes re-verifies them). Each node sweeps its own store.
func Sweep(ctx context.Context, st Sweepable, grace time.Duration, now time.Time, dry bool, markers ...Marker) (SweepResult, error) {
	live := map[cid.Cid]bool{}
	for _, m := range markers {
		if err := m(ctx, func(c cid.Cid) { live[c] = true }); err != nil {
			return SweepResult{}, err
		}
	}
	var doomed []store.BlobInfo
	err := st.List(ctx, func(b store.BlobInfo) error {
		if !live[b.CID] && b.Verified.Before(now.Add(-grace)) {
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
			// Re-check: a Put of the same bytes may have re-verified it
			// since the listing.
			if cur, err := statOf(ctx, st, b.CID); err == nil && !cur.Before(now.Add(-grace)) {
				continue
			}
			if err := st.Delete(ctx, b.CID); err != nil {
				return res, err
			}
		}
		res.Blobs++
		res.Bytes += b.Size
	}
	return res, nil
}
