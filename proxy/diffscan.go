package proxy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"slices"

	"github.com/condamesh/condamesh/conda"
)

// Deriving after a small upstream change. A full scan transcodes every
// record of the index (2.2 CPU-seconds for conda-forge's linux-64, more
// than its download takes on a loaded machine, and the derivation waited
// for it). When the subdir has a published set that knows each name's
// records digest (nameShard.raw) and the subdir's CurrentCache holds that
// set's current_repodata.json, the scan only cuts records out and digests
// them (conda.ScanRawRecords, about 1.5 times as fast on one core, so it
// keeps up with the download and leaves the other core to it). Only the
// records of the names whose digest changed are then read back from the
// stored index and transcoded (conda.TranscodeRecord); every other name
// keeps its shard and its part of current_repodata.json. When more than
// a quarter of the records changed, transcoding them one by one would be
// slower than the full scan on every core: the derivation scans afresh.

// rawName is what a raw scan saw of one package name: the digest of its
// records (conda.NameDigest) and where each is in the index.
type rawName struct {
	digest *conda.NameDigest
	recs   []rawRef
}

// rawRef is one record of a raw scan: its file name and JSON extent.
type rawRef struct {
	fn  string
	off int64
	n   uint32
}

// scanRaw cuts the records of the repodata.json r out and digests them by
// name.
func (p *Proxy) scanRaw(ctx context.Context, r io.Reader) (map[string]*rawName, int, error) {
	raws := map[string]*rawName{}
	records := 0
	_, err := conda.ScanRawRecords(r, conda.ScanOptions{}, func(rr *conda.RawRecord) error {
		if records%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if p.scanHook != nil {
			p.scanHook(rr.Filename)
		}
		rn := raws[rr.Name]
		if rn == nil {
			rn = &rawName{digest: conda.NewNameDigest()}
			raws[rr.Name] = rn
		}
		rn.digest.Add(rr.Filename, sha256.Sum256(rr.JSON))
		rn.recs = append(rn.recs, rawRef{fn: rr.Filename, off: rr.Offset, n: uint32(len(rr.JSON))})
		records++
		return nil
	})
	return raws, records, err
}

// changedNames returns each name's digest, and the names whose digest
// differs from prev's with how many records they have.
func changedNames(raws map[string]*rawName, prev *derivedSet) (sums map[string][32]byte, changed []string, records int) {
	sums = make(map[string][32]byte, len(raws))
	for name, rn := range raws {
		sum := rn.digest.Sum()
		sums[name] = sum
		if old, ok := prev.names[name]; !ok || old.raw != sum {
			changed = append(changed, name)
			records += len(rn.recs)
		}
	}
	slices.Sort(changed)
	return sums, changed, records
}

// transcodeChanged reads the records of the changed names back from the
// index idx, transcodes them and hands them to live (the scratch file and
// per-name offsets the shards are assembled from) and latest.
func transcodeChanged(ctx context.Context, idx io.ReaderAt, raws map[string]*rawName, changed []string, live *liveLookup, latest *conda.Latest) error {
	var buf []byte
	for _, name := range changed {
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, r := range raws[name].recs {
			buf = slices.Grow(buf[:0], int(r.n))[:r.n]
			if _, err := idx.ReadAt(buf, r.off); err != nil {
				return fmt.Errorf("proxy: read stored index: %w", err)
			}
			pr, err := conda.TranscodeRecord(r.fn, buf)
			if err != nil {
				return err
			}
			pr.JSONSum = sha256.Sum256(buf)
			if err := live.add(pr); err != nil {
				return err
			}
			latest.AddPair(pr)
		}
	}
	return nil
}
