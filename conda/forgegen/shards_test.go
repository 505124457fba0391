package forgegen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/condamesh/condamesh/conda"
)

// TestWriteShards: the shard index names one shard per name, each file
// hashes to its name in the index, and every record of repodata.json is in
// its name's shard with its sha256 and size.
func TestWriteShards(t *testing.T) {
	c := newChannel(t, Config{Seed: 3, Records: 2000, NoarchRecords: 300})
	dir := t.TempDir()
	for _, sd := range c.Subdirs() {
		n, err := c.WriteShards(context.Background(), dir, sd)
		if err != nil {
			t.Fatal(err)
		}
		if n != len(c.Names(sd)) {
			t.Fatalf("%s: %d shards, want one per name (%d)", sd, n, len(c.Names(sd)))
		}
		index, err := os.ReadFile(filepath.Join(dir, sd, "repodata_shards.msgpack.zst"))
		if err != nil {
			t.Fatal(err)
		}
		digests, _, err := conda.ShardIndexDigests(index)
		if err != nil || len(digests) != n {
			t.Fatalf("%s: index of %d names (%v), want %d", sd, len(digests), err, n)
		}
		entries := map[string]map[string]conda.ShardEntry{}
		for name, sum := range digests {
			b, err := os.ReadFile(filepath.Join(dir, sd, "shards", hex.EncodeToString(sum[:])+".msgpack.zst"))
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(b) != sum {
				t.Fatalf("%s/%s: shard file does not hash to its name", sd, name)
			}
			if entries[name], err = conda.ShardEntries(b); err != nil {
				t.Fatal(err)
			}
		}
		count := 0
		_, err = conda.ScanRepodata(repodata(t, c, sd), func(r conda.Record) error {
			count++
			e, ok := entries[r.Name()][r.Filename]
			size, _ := r.Fields["size"].(interface{ Int64() (int64, error) })
			var want int64
			if size != nil {
				want, _ = size.Int64()
			}
			if !ok || hex.EncodeToString(e.SHA256) != r.Fields["sha256"] || e.Size != want {
				t.Fatalf("%s/%s: shard entry %+v (found %v), want sha256 %v size %d", sd, r.Filename, e, ok, r.Fields["sha256"], want)
			}
			return nil
		})
		if err != nil || count != c.Len(sd) {
			t.Fatalf("%s: %d records scanned (%v), want %d", sd, count, err, c.Len(sd))
		}
	}
}
