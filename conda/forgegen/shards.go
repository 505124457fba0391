package forgegen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/condamesh/condamesh/conda"
)

// WriteShards writes subdir's sharded repodata (CEP-16) under
// dir/subdir, as conda-forge publishes it beside repodata.json:
// repodata_shards.msgpack.zst and shards/<sha256>.msgpack.zst, one shard
// per name holding the records WriteRepodata lists. It returns the number
// of shards.
func (c *Channel) WriteShards(ctx context.Context, dir, subdir string) (int, error) {
	group, ok := c.groups[subdir]
	if !ok {
		return 0, fmt.Errorf("%w: no subdir %q", ErrConfig, subdir)
	}
	shardDir := filepath.Join(dir, subdir, "shards")
	if err := os.MkdirAll(shardDir, 0o755); err != nil {
		return 0, err
	}
	comp := conda.NewCompressor()
	digests := make(map[string][]byte, len(group))
	var raw, js []byte
	for _, n := range group {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		recs, err := c.records(subdir, n)
		if err != nil {
			return 0, err
		}
		var pkgs, condas [][]byte
		for j := range recs {
			rec := &recs[j]
			js = appendRecord(js[:0], rec)
			obj := js[bytes.IndexByte(js, '{'):] // "filename": {…}
			fields, err := conda.DecodeRecordFields(obj)
			if err != nil {
				return 0, fmt.Errorf("forgegen: record %s: %w", rec.Filename, err)
			}
			pair, err := conda.AppendShardPair(nil, conda.Record{Filename: rec.Filename, Subdir: subdir, Fields: fields})
			if err != nil {
				return 0, err
			}
			if rec.Conda() {
				condas = append(condas, pair)
			} else {
				pkgs = append(pkgs, pair)
			}
		}
		raw = conda.AppendShard(raw[:0], pkgs, condas)
		b := comp.Append(nil, raw)
		sum := sha256.Sum256(b)
		if err := writeAtomic(filepath.Join(shardDir, hex.EncodeToString(sum[:])+".msgpack.zst"), b); err != nil {
			return 0, err
		}
		digests[n.name] = sum[:]
	}
	index, err := conda.ShardIndex(subdir, digests)
	if err != nil {
		return 0, err
	}
	return len(digests), writeAtomic(filepath.Join(dir, subdir, "repodata_shards.msgpack.zst"), index)
}
