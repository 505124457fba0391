package proxy_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/proxy"
)

// publishShards makes the rig's upstream publish the shards of its
// linux-64 index; with badShard, the shard file's bytes are not those its
// name hashes.
func publishShards(t *testing.T, r *rig, badShard bool) {
	t.Helper()
	info, err := conda.ReadPackage(bytes.NewReader(r.pkg), int64(len(r.pkg)), "pkg-1.0-0.tar.bz2")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := conda.HashReader(bytes.NewReader(r.pkg))
	index, shards, err := conda.Shards("linux-64", []conda.Record{conda.NewRecord(info, d)})
	if err != nil {
		t.Fatal(err)
	}
	r.up.mu.Lock()
	defer r.up.mu.Unlock()
	r.up.files["/c/linux-64/repodata_shards.msgpack.zst"] = index
	for h, b := range shards {
		if badShard {
			b = conda.AppendZstd(nil, []byte{0x80}) // an empty map
		}
		r.up.files["/c/linux-64/shards/"+h+".msgpack.zst"] = b
	}
}

// TestPackageRecordFromUpstreamShards: when the upstream publishes shards,
// a package's record comes from the upstream's shard of its name: the
// upstream repodata.json is never fetched and nothing is derived. A shard
// whose bytes do not hash to its name is not trusted (the record comes
// from repodata.json), and a package that does not match its shard's
// record is refused.
func TestPackageRecordFromUpstreamShards(t *testing.T) {
	const index, pkg = "linux-64/repodata_shards.msgpack.zst", "linux-64/pkg-1.0-0.tar.bz2"
	t.Run("from the shard", func(t *testing.T) {
		r := newRig(t)
		publishShards(t, r, false)
		if _, b, err := r.get(t, index); err != nil || !bytes.Equal(b, r.up.files["/c/"+index]) {
			t.Fatalf("shard index: %v (the upstream's passed through: %v)", err, bytes.Equal(b, r.up.files["/c/"+index]))
		}
		if _, b, err := r.get(t, pkg); err != nil || !bytes.Equal(b, r.pkg) {
			t.Fatalf("package: %v", err)
		}
		if n := r.up.hitsOf("/c/linux-64/repodata.json"); n != 0 {
			t.Fatalf("upstream repodata.json fetched %d times, want 0", n)
		}
		if n, d := r.p.UpstreamShardLookups(), r.p.Derivations(); n != 1 || d != 0 {
			t.Fatalf("%d records from upstream shards, %d derivations; want 1 and 0", n, d)
		}
		// Not listed in the shard of its name: a 404, from repodata.json.
		if _, _, err := r.get(t, "linux-64/pkg-2.0-0.tar.bz2"); !errors.Is(err, proxy.ErrNotFound) {
			t.Fatalf("unlisted package: %v, want ErrNotFound", err)
		}
	})
	t.Run("shard not hashing to its name", func(t *testing.T) {
		r := newRig(t)
		publishShards(t, r, true)
		if _, _, err := r.get(t, index); err != nil {
			t.Fatal(err)
		}
		if _, b, err := r.get(t, pkg); err != nil || !bytes.Equal(b, r.pkg) {
			t.Fatalf("package: %v", err)
		}
		if n := r.p.UpstreamShardLookups(); n != 0 {
			t.Fatalf("%d records from a shard that does not hash to its name", n)
		}
		if n := r.up.hitsOf("/c/linux-64/repodata.json"); n != 1 {
			t.Fatalf("upstream repodata.json fetched %d times, want 1 (the record comes from it)", n)
		}
	})
	t.Run("package not matching its shard", func(t *testing.T) {
		r := newRig(t)
		publishShards(t, r, false)
		if _, _, err := r.get(t, index); err != nil {
			t.Fatal(err)
		}
		r.up.mode = "corrupt"
		if _, _, err := r.get(t, pkg); !errors.Is(err, proxy.ErrCorrupt) {
			t.Fatalf("corrupt package: %v, want ErrCorrupt", err)
		}
		if n := r.up.hitsOf("/c/linux-64/repodata.json"); n != 0 {
			t.Fatalf("upstream repodata.json fetched %d times, want 0", n)
		}
	})
}
