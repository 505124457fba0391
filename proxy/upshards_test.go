package proxy_test

import (
	"bytes"
	"errors"
	"path"
	"strconv"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/proxy"
	"github.com/vmihailenco/msgpack/v5"
)

// publishShards makes the rig's upstream publish the shards of its
// linux-64 index under base (the index's shards_base_url); with badShard,
// the shard file's bytes are not those its name hashes. It returns the
// shard's path upstream.
func publishShards(t *testing.T, r *rig, base string, badShard bool) string {
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
	if base != "./shards/" {
		raw, err := msgpack.Marshal(map[string]any{"info": map[string]any{"subdir": "linux-64", "base_url": "", "shards_base_url": base}, "shards": mustDigests(t, index)})
		if err != nil {
			t.Fatal(err)
		}
		index = conda.AppendZstd(nil, raw)
	}
	r.up.files["/c/linux-64/repodata_shards.msgpack.zst"] = index
	var p string
	for h, b := range shards {
		if badShard {
			b = conda.AppendZstd(nil, []byte{0x80}) // an empty map
		}
		p = path.Clean("/c/linux-64/" + base + h + ".msgpack.zst")
		r.up.files[p] = b
	}
	return p
}

func mustDigests(t *testing.T, index []byte) map[string][]byte {
	t.Helper()
	d, _, err := conda.ShardIndexDigests(index)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for name, sum := range d {
		out[name] = sum[:]
	}
	return out
}

// TestPackageRecordFromUpstreamShards: when the upstream publishes shards,
// a package's record comes from the upstream's shard of its name: the
// upstream repodata.json is never fetched and nothing is derived. A shard
// whose bytes do not hash to its name is not trusted (the record comes
// from repodata.json), and a package that does not match its shard's
// record is refused.
func TestPackageRecordFromUpstreamShards(t *testing.T) {
	const index, pkg = "linux-64/repodata_shards.msgpack.zst", "linux-64/pkg-1.0-0.tar.bz2"
	for _, base := range []string{"./shards/", "", "repodata_shards/"} {
		t.Run("from the shard, shards_base_url "+strconv.Quote(base), func(t *testing.T) {
			r := newRig(t)
			shard := publishShards(t, r, base, false)
			if _, _, err := r.get(t, index); err != nil {
				t.Fatal(err)
			}
			// A client reads the shard where the index says it is.
			if _, b, err := r.get(t, strings.TrimPrefix(shard, "/c/")); err != nil || !bytes.Equal(b, r.up.files[shard]) {
				t.Fatalf("shard %s through the proxy: %v", shard, err)
			}
			if _, b, err := r.get(t, pkg); err != nil || !bytes.Equal(b, r.pkg) {
				t.Fatalf("package: %v", err)
			}
			if n, h := r.p.UpstreamShardLookups(), r.up.hitsOf("/c/linux-64/repodata.json"); n != 1 || h != 0 {
				t.Fatalf("%d records from upstream shards, %d upstream repodata.json requests; want 1 and 0", n, h)
			}
		})
	}
	t.Run("from the shard", func(t *testing.T) {
		r := newRig(t)
		publishShards(t, r, "./shards/", false)
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
		shard := publishShards(t, r, "./shards/", true)
		if _, _, err := r.get(t, index); err != nil {
			t.Fatal(err)
		}
		if _, b, err := r.get(t, pkg); err != nil || !bytes.Equal(b, r.pkg) {
			t.Fatalf("package: %v", err)
		}
		if n := r.p.UpstreamShardLookups(); n != 0 {
			t.Fatalf("%d records from a shard that does not hash to its name", n)
		}
		// Nor is it served: clients would cache it by its name forever.
		if _, _, err := r.get(t, strings.TrimPrefix(shard, "/c/")); !errors.Is(err, proxy.ErrCorrupt) {
			t.Fatalf("the shard itself: %v, want ErrCorrupt", err)
		}
		if n := r.up.hitsOf("/c/linux-64/repodata.json"); n != 1 {
			t.Fatalf("upstream repodata.json fetched %d times, want 1 (the record comes from it)", n)
		}
	})
	t.Run("package not matching its shard", func(t *testing.T) {
		r := newRig(t)
		publishShards(t, r, "./shards/", false)
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
