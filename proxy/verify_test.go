package proxy_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/proxy"
	"github.com/condamesh/condamesh/store"
)

// rawRecord is a repodata record for any bytes served as a package file.
func rawRecord(subdir, filename string, b []byte) conda.Record {
	fn, _ := conda.ParseFilename(filename)
	sum, md := sha256.Sum256(b), md5.Sum(b)
	return conda.Record{Filename: filename, Subdir: subdir, Fields: map[string]any{
		"name": fn.Name, "version": fn.Version, "build": fn.Build, "build_number": int64(0), "depends": []any{}, "subdir": subdir,
		"sha256": hex.EncodeToString(sum[:]), "md5": hex.EncodeToString(md[:]), "size": int64(len(b))}}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// TestPackagesAreCheckedAgainstTheirRecord: a package is stored and served
// only once its bytes match the sha256 and size of its record in the
// upstream repodata.json, which is fetched first when it is not cached; an
// unlisted file is not found without asking the upstream for it; a stored
// blob that disagrees with the record is never served; a body is bounded
// by the record's size decoded and on the wire (gzip).
func TestPackagesAreCheckedAgainstTheirRecord(t *testing.T) {
	ctx := context.Background()
	const pkg = "linux-64/pkg-1.0-0.tar.bz2"
	pkgBlobs := func(r *rig) (n int) {
		_ = r.st.List(ctx, func(b store.BlobInfo) error {
			if b.Size >= int64(len(r.pkg))-1 && b.Size != int64(len(r.up.files["/c/linux-64/repodata.json"])) {
				n++
			}
			return nil
		})
		return n
	}
	for _, mode := range []string{"corrupt", "gzipbomb", "gzippad"} {
		t.Run(mode+" before the index is cached", func(t *testing.T) {
			r := newRig(t)
			r.up.mode = mode
			if _, _, err := r.get(t, pkg); !errors.Is(err, proxy.ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
			if n := pkgBlobs(r); n != 0 {
				t.Fatalf("%d blobs of the upstream's bytes were stored", n)
			}
			r.up.mode = ""
			if _, b, err := r.get(t, pkg); err != nil || !bytes.Equal(b, r.pkg) {
				t.Fatalf("after the upstream healed: %v", err)
			}
		})
	}

	t.Run("unlisted file", func(t *testing.T) {
		r := newRig(t)
		const unlisted = "linux-64/unlisted-1.0-0.tar.bz2"
		r.up.files["/c/"+unlisted] = r.pkg
		if _, _, err := r.get(t, unlisted); !errors.Is(err, proxy.ErrNotFound) {
			t.Fatalf("unlisted file: %v, want ErrNotFound", err)
		}
		if n := r.up.hitsOf("/c/" + unlisted); n != 0 {
			t.Fatalf("the upstream was asked %d times for an unlisted file", n)
		}
	})

	t.Run("stored blob that disagrees with the record", func(t *testing.T) {
		r := newRig(t)
		wrong := randomBytes(len(r.pkg))
		info, err := r.st.Put(ctx, bytes.NewReader(wrong), store.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// What an older proxy stored before it knew the record.
		if _, err := r.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutProxyEntries{PutProxyEntries: &v1.PutProxyEntriesOp{Entries: []*v1.ProxyEntry{
			{Channel: "px", Path: pkg, Cid: info.CID.String(), Size: info.Size, Status: 200, ValidatedUnix: r.now.Load()}}}}}); err != nil {
			t.Fatal(err)
		}
		if _, b, err := r.get(t, pkg); err != nil || !bytes.Equal(b, r.pkg) {
			t.Fatalf("served %d bytes (%v), want the record's", len(b), err)
		}
	})
}

// TestReplacedPackageIsServedByItsNewRecord: when the upstream replaces a
// package under the same file name, once the proxy's repodata.json has the
// new record the new bytes are served (fetched and verified), never the old
// ones: the index clients are served and the package records switch
// together.
func TestReplacedPackageIsServedByItsNewRecord(t *testing.T) {
	r := newRig(t)
	const fn = "rebuilt-1.0-0.tar.bz2"
	old, fresh := randomBytes(4096), randomBytes(5000)
	publish := func(b []byte) {
		r.up.mu.Lock()
		defer r.up.mu.Unlock()
		r.up.files["/c/linux-64/"+fn] = b
		r.up.files["/c/linux-64/repodata.json"] = conda.Repodata("linux-64", []conda.Record{rawRecord("linux-64", fn, b)})
	}
	publish(old)
	if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil { // clients read the index first
		t.Fatal(err)
	}
	if _, b, err := r.get(t, "linux-64/"+fn); err != nil || !bytes.Equal(b, old) {
		t.Fatalf("first version: %v", err)
	}
	first, _ := r.cat.ProxyEntry(context.Background(), "px", "linux-64/repodata.json")
	publish(fresh)
	r.now.Add(61) // past the TTL: the next read of the index revalidates it
	if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil {
		t.Fatal(err)
	}
	// The served index switches once its derived set is complete.
	waitUntil(t, func() bool {
		res, _, err := r.get(t, "linux-64/repodata.json")
		return err == nil && res.CID.String() != first.Cid
	})
	for i := range 2 {
		if _, b, err := r.get(t, "linux-64/"+fn); err != nil || !bytes.Equal(b, fresh) {
			t.Fatalf("request %d after the index changed: %v, got the old bytes: %v", i, err, bytes.Equal(b, old))
		}
	}
	if n := r.up.hitsOf("/c/linux-64/" + fn); n != 2 {
		t.Fatalf("%d upstream requests for the package, want 2 (one per version)", n)
	}
}

// TestNotFoundIsNodeLocal: 1,000 random paths the upstream does not have
// write nothing to the replicated catalog, make at most one upstream
// request per path that can be a conda file (none for unlisted packages,
// shards of a derived index, or paths that cannot be conda files), and none
// at all when asked again.
func TestNotFoundIsNodeLocal(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil {
		t.Fatal(err)
	}
	hex64 := func() string { return hex.EncodeToString(randomBytes(32)) }
	var paths []string
	for i := range 1000 {
		switch i % 8 {
		case 0:
			paths = append(paths, fmt.Sprintf("linux-64/nope%d-1.0-0.conda", i)) // unlisted package
		case 1:
			paths = append(paths, "linux-64/shards/"+hex64()+".msgpack.zst") // not in the derived index
		case 2:
			paths = append(paths, fmt.Sprintf("sub%d/repodata.json", i)) // a subdir the upstream lacks
		case 3:
			paths = append(paths, "linux-64/"+strings.Repeat("a", 7000)+".conda") // too long
		case 4:
			paths = append(paths, fmt.Sprintf("linux-64/x%d?y.conda", i), fmt.Sprintf("linux-64/%%2e%%2e%%2f%d", i)) // characters
		case 5:
			paths = append(paths, fmt.Sprintf("linux-64/a/b/c%d.json", i), fmt.Sprintf("../c%d/repodata.json", i)) // depth, dots
		case 6:
			paths = append(paths, fmt.Sprintf("linux-64/random%d.json", i)) // not an index file name
		case 7:
			paths = append(paths, fmt.Sprintf("sub%d/pkg-1.0-0.conda", i)) // a package of a subdir the upstream lacks
		}
	}
	var proposed int
	r.prop.onPropose = func(*v1.Command) { proposed++ }
	requests := r.up.total
	before := requests()
	for round := range 2 {
		for _, p := range paths {
			if _, _, err := r.get(t, p); !errors.Is(err, proxy.ErrNotFound) {
				t.Fatalf("%.80s: %v, want ErrNotFound", p, err)
			}
		}
		// Per round one: the repodata.json of each missing subdir (125 +
		// 125), and the first shard (after which the index is derived).
		made := requests() - before
		if max := int64(125 + 125 + 1); round == 0 && made > max {
			t.Fatalf("%d upstream requests for %d paths, want at most %d", made, len(paths), max)
		}
		if round == 1 && made != 0 {
			t.Fatalf("asked again, the paths made %d more upstream requests", made)
		}
		before = requests()
	}
	// Nothing is replicated: neither a 404 nor the derived set (node-local).
	if proposed != 0 {
		t.Fatalf("%d commands proposed, want none", proposed)
	}
	if _, err := r.cat.ProxyEntry(ctx, "px", "sub2/repodata.json"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("a 404 reached the catalog: %v", err)
	}
}

// TestDerivationRunsOnce: the files of a derived group asked for at once
// are derived once, and shards not in a derived index cost no derivation
// and no upstream request.
func TestDerivationRunsOnce(t *testing.T) {
	r := newRig(t)
	r.up.delay = 50 * time.Millisecond // the concurrent requests overlap
	files := []string{"linux-64/current_repodata.json", "linux-64/current_repodata.json.zst", "linux-64/current_repodata.json.bz2",
		"linux-64/repodata_shards.msgpack.zst", "linux-64/repodata.json.zst"}
	var wg sync.WaitGroup
	errs := make(chan error, 5*len(files))
	for range 5 {
		for _, f := range files {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, _, err := r.get(t, f); err != nil {
					errs <- fmt.Errorf("%s: %w", f, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r.up.delay = 0
	total := r.up.total
	cached := total()
	for _, f := range files {
		if _, _, err := r.get(t, f); err != nil {
			t.Fatal(err)
		}
	}
	if n := total() - cached; n != 0 {
		t.Fatalf("derived files asked again made %d upstream requests", n)
	}
	before := r.up.hitsOf("/c/linux-64/repodata.json")
	for range 20 {
		p := "linux-64/shards/" + hex.EncodeToString(randomBytes(32)) + ".msgpack.zst"
		if _, _, err := r.get(t, p); !errors.Is(err, proxy.ErrNotFound) {
			t.Fatalf("unknown shard: %v", err)
		}
		if n := r.up.hitsOf("/c/" + p); n != 0 {
			t.Fatal("an unknown shard of a derived index was asked from the upstream")
		}
	}
	// One derived set serves every group.
	if n := r.p.Derivations(); n != 1 || r.up.hitsOf("/c/linux-64/repodata.json") != before {
		t.Fatalf("%d derivations, want 1", n)
	}
}
