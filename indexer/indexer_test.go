package indexer_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/indexer"
	"github.com/condamesh/condamesh/internal/testlog"
	"github.com/condamesh/condamesh/store"
)

type rig struct {
	st  *store.Store
	cat *catalog.Catalog
	ix  *indexer.Indexer
	idx uint64
}

func newRig(t *testing.T) *rig {
	st, err := store.Open(context.Background(), store.Config{Dir: "/d", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	r := &rig{st: st}
	r.cat = catalog.New(st, nil)
	r.ix = indexer.New(r.cat, st, testlog.New(t, slog.LevelWarn))
	return r
}

func (r *rig) apply(t *testing.T, cmd *v1.Command) {
	t.Helper()
	r.idx++
	cmd.TimeUnixNano = 1_700_000_000_000_000_000 + int64(r.idx)
	if _, err := r.cat.Apply(context.Background(), r.idx, cmd); err != nil {
		t.Fatal(err)
	}
}

func version(name, subdir string) *v1.PackageVersion {
	fn := name + "-1.0-0.conda"
	rec := map[string]any{"name": name, "version": "1.0", "build": "0", "build_number": 0, "subdir": subdir, "depends": []any{}, "sha256": fmt.Sprintf("%064x", len(name)), "md5": fmt.Sprintf("%032x", 1), "size": 10}
	return &v1.PackageVersion{Channel: "c", Package: name, Platform: subdir, Filename: fn, Version: "1.0", Size: 10, RecordJson: conda.EncodeRecordFields(rec)}
}

// newNotifyingRig is a rig whose catalog tells the indexer about changes,
// as a node's does, for tests of the background loop.
func newNotifyingRig(t *testing.T) *rig {
	r := newRig(t)
	r.cat = catalog.New(r.st, func(ch string) { r.ix.Notify(ch) })
	r.ix = indexer.New(r.cat, r.st, testlog.New(t, slog.LevelWarn))
	return r
}

func put(vs ...*v1.PackageVersion) *v1.Command {
	return &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: vs}}}
}

func (r *rig) file(t *testing.T, path string) string {
	t.Helper()
	p, err := r.ix.File(context.Background(), "c", path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p.CID.String()
}

// TestOnlyChangedSubdirsRebuild checks a change to one subdir rebuilds that
// subdir alone, and that published bytes follow the records.
func TestOnlyChangedSubdirsRebuild(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}})
	r.apply(t, put(version("a", "linux-64"), version("b", "osx-64")))
	if err := r.ix.Reconcile(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if got := r.ix.SubdirBuilds(); got != 3 { // noarch, linux-64, osx-64
		t.Fatalf("first reconcile built %d subdirs, want 3", got)
	}
	osx := r.file(t, "osx-64/repodata.json")
	linux := r.file(t, "linux-64/repodata.json")
	for _, p := range []string{"noarch/repodata.json", "noarch/repodata.json.zst", "noarch/repodata.json.bz2", "noarch/current_repodata.json", "noarch/repodata_shards.msgpack.zst", "channeldata.json", "index.html", "linux-64/index.html"} {
		r.file(t, p)
	}
	r.apply(t, put(version("c", "linux-64")))
	if err := r.ix.Reconcile(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if got := r.ix.SubdirBuilds(); got != 4 {
		t.Fatalf("after a linux-64 change %d builds in total, want 4 (only linux-64 rebuilt)", got)
	}
	if r.file(t, "osx-64/repodata.json") != osx {
		t.Fatal("untouched osx-64 repodata changed")
	}
	if r.file(t, "linux-64/repodata.json") == linux {
		t.Fatal("linux-64 repodata did not change")
	}
	if ok, _ := r.ix.Fresh(ctx, "c", "linux-64"); !ok {
		t.Fatal("linux-64 not fresh after reconcile")
	}
	// Nothing changed: nothing rebuilt.
	if err := r.ix.Reconcile(ctx, "c"); err != nil || r.ix.SubdirBuilds() != 4 {
		t.Fatalf("idle reconcile rebuilt: %v %d", err, r.ix.SubdirBuilds())
	}
	// Deleting the channel unpublishes everything.
	r.apply(t, &v1.Command{Op: &v1.Command_DeleteChannel{DeleteChannel: &v1.DeleteChannelOp{Name: "c"}}})
	if err := r.ix.Reconcile(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ix.File(ctx, "c", "osx-64/repodata.json"); err != indexer.ErrNotFound {
		t.Fatalf("deleted channel still published: %v", err)
	}
}

// TestIdenticalAcrossReplicas applies the same commands to two independent
// stores (two replicas) and checks they publish byte-identical files, so
// every node serves the same ETags.
func TestIdenticalAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	a, b := newRig(t), newRig(t)
	for _, r := range []*rig{a, b} {
		r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}})
		r.apply(t, put(version("zlib", "linux-64"), version("numpy", "linux-64"), version("tzdata", "noarch")))
		if err := r.ix.Reconcile(ctx, "c"); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"linux-64/repodata.json", "linux-64/repodata.json.zst", "linux-64/repodata.json.bz2", "linux-64/repodata.json.gz", "linux-64/repodata_shards.msgpack.zst", "linux-64/current_repodata.json", "linux-64/current_repodata.json.gz", "noarch/repodata.json", "channeldata.json", "index.html", "linux-64/index.html"} {
		if a.file(t, p) != b.file(t, p) {
			t.Errorf("%s differs between replicas", p)
		}
	}
}

// TestWaitFreshSeesEveryWrite applies changes while Run regenerates in the
// background, and after each change checks that WaitFresh returns only once
// the published repodata reflects it (read-your-writes).
func TestWaitFreshSeesEveryWrite(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, store.Config{Dir: "/d", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var ix *indexer.Indexer
	r := &rig{st: st}
	r.cat = catalog.New(st, func(ch string) { ix.Notify(ch) })
	ix = indexer.New(r.cat, st, testlog.New(t, slog.LevelWarn))
	r.ix = ix
	done := make(chan struct{})
	go func() { _ = ix.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}})
	for i := range 60 {
		name := fmt.Sprintf("p%03d", i)
		r.apply(t, put(version(name, "linux-64")))
		if err := ix.WaitFresh(ctx, "c", "linux-64"); err != nil {
			t.Fatal(err)
		}
		p, err := ix.File(ctx, "c", "linux-64/repodata.json")
		if err != nil {
			t.Fatal(err)
		}
		body, err := st.ReadAll(ctx, p.CID)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(body), name+"-1.0-0.conda") {
			t.Fatalf("change %d: fresh repodata lacks %s", i, name)
		}
	}
}

// TestSupersededShardsStayServed: after a rebuild changes a package's
// shard, the previous shard stays published (clients holding the previous
// shard index still resolve, CEP-16), marked as superseded.
func TestSupersededShardsStayServed(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}})
	r.apply(t, put(version("zlib", "linux-64")))
	if err := r.ix.Reconcile(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	shards := func() map[string]bool {
		out := map[string]bool{}
		_ = r.st.Scan(ctx, []byte("l/idx/c/linux-64/shards/"), func(k, v []byte) error {
			out[string(k)] = strings.Count(string(v), "\n") == 2
			return nil
		})
		return out
	}
	before := shards()
	if len(before) != 1 {
		t.Fatalf("shards after the first build: %v", before)
	}
	v2 := version("zlib", "linux-64")
	v2.Filename = "zlib-2.0-0.conda"
	r.apply(t, put(v2))
	if err := r.ix.Reconcile(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	after := shards()
	if len(after) != 2 {
		t.Fatalf("shards after the rebuild: %v, want the old one kept", after)
	}
	for k := range before {
		if !after[k] {
			t.Fatalf("superseded shard %s not marked", k)
		}
		path := strings.TrimPrefix(k, "l/idx/c/")
		if _, err := r.ix.File(ctx, "c", path); err != nil {
			t.Fatalf("superseded shard no longer served: %v", err)
		}
	}
}

// TestBusyChannelRebuildsAreSpaced: while a channel changes continuously
// (a long mirror sync publishing batch after batch), the background loop
// rebuilds it at most about once per four build times, not back to back,
// and publishes the last change once the changes stop.
func TestBusyChannelRebuildsAreSpaced(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := newNotifyingRig(t)
	r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}})
	var vs []*v1.PackageVersion
	for i := range 1000 {
		vs = append(vs, version(fmt.Sprintf("pkg%04d", i), "linux-64"))
	}
	r.apply(t, put(vs...))
	if err := r.ix.Reconcile(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	// What one incremental rebuild costs here.
	r.apply(t, put(version("first", "linux-64")))
	start := time.Now()
	if err := r.ix.Reconcile(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	build := time.Since(start)
	done := make(chan error, 1)
	go func() { done <- r.ix.Run(ctx) }()
	before := r.ix.SubdirBuilds()
	begin := time.Now()
	tick := time.NewTicker(build / 10)
	n := 0
	for time.Since(begin) < 30*build {
		<-tick.C
		n++
		r.apply(t, put(version(fmt.Sprintf("new%04d", n), "linux-64")))
	}
	tick.Stop()
	busy := time.Since(begin)
	builds := r.ix.SubdirBuilds() - before
	// Back to back would be about busy/build (30) rebuilds; spaced, one
	// per five build times (six), with slack for builds that vary.
	if limit := uint64(busy/(3*build)) + 2; builds > limit {
		t.Errorf("%d rebuilds during %v of continuous changes (one build takes %v), want at most %d", builds, busy, build, limit)
	}
	last := fmt.Sprintf("new%04d-1.0-0.conda", n)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ok, _ := r.ix.Fresh(ctx, "c", "linux-64"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not republished within 30 s of the last change")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p, err := r.ix.File(ctx, "c", "linux-64/repodata.json")
	if err != nil {
		t.Fatal(err)
	}
	data, err := r.st.ReadAll(ctx, p.CID)
	if err != nil || !strings.Contains(string(data), last) {
		t.Fatalf("published repodata lacks the last change %s (%v)", last, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestHeldChannelWaitsForRelease: the background loop leaves a held
// channel's changes to its release (while it keeps rebuilding other
// channels), a reader still gets fresh indexes at once, and release
// rebuilds the channel.
func TestHeldChannelWaitsForRelease(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := newNotifyingRig(t)
	for _, ch := range []string{"c", "d"} {
		r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: ch}}}})
	}
	done := make(chan error, 1)
	go func() { done <- r.ix.Run(ctx) }()
	fresh := func(ch string) bool {
		ok, err := r.ix.Fresh(ctx, ch, "linux-64")
		return err == nil && ok
	}
	waitTrue := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	repodata := func() string {
		t.Helper()
		p, err := r.ix.File(ctx, "c", "linux-64/repodata.json")
		if err != nil {
			t.Fatal(err)
		}
		data, err := r.st.ReadAll(ctx, p.CID)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	r.apply(t, put(version("early", "linux-64")))
	waitTrue("c built before the hold", func() bool { return fresh("c") })

	release := r.ix.Hold("C") // channel names are case-insensitive
	start := time.Now()
	r.apply(t, put(version("held", "linux-64")))
	// Keep the loop busy with d well past c's ordinary cooldown (four
	// build times; a build of these channels is a few milliseconds): d's
	// changes come after c's, so the loop has seen c's change each time d
	// is rebuilt, and left it.
	for i := 0; i < 5 || time.Since(start) < 300*time.Millisecond; i++ {
		other := version(fmt.Sprintf("other%d", i), "linux-64")
		other.Channel = "d"
		r.apply(t, put(other))
		waitTrue("d rebuilt", func() bool { return fresh("d") })
	}
	if fresh("c") {
		t.Fatal("a held channel was rebuilt in the background")
	}
	if err := r.ix.WaitFresh(ctx, "c", "linux-64"); err != nil || !strings.Contains(repodata(), "held-1.0-0.conda") {
		t.Fatalf("a reader of a held channel got stale indexes: %v", err)
	}
	r.apply(t, put(version("last", "linux-64")))
	release()
	release() // a second call changes nothing
	waitTrue("c rebuilt on release", func() bool { return fresh("c") })
	if !strings.Contains(repodata(), "last-1.0-0.conda") {
		t.Fatal("the rebuild on release lacks the last change")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// readFile returns the bytes of a published file.
func (r *rig) readFile(t *testing.T, path string) []byte {
	t.Helper()
	p, err := r.ix.File(context.Background(), "c", path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := r.st.ReadAll(context.Background(), p.CID)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Issue #9 point 23: repodata.json and current_repodata.json are also
// published gzip-compressed, computed once per rebuild, decoding to the
// same bytes; an index published by an older build (no .gz, generation
// marks without a layout) is rebuilt once at the next reconcile.
func TestGzipVariants(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}})
	r.apply(t, put(version("zlib", "linux-64"), version("tzdata", "noarch")))
	if err := r.ix.Reconcile(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T) {
		for _, sd := range []string{"linux-64", "noarch"} {
			for _, name := range []string{"repodata.json", "current_repodata.json"} {
				p := sd + "/" + name
				zr, err := gzip.NewReader(bytes.NewReader(r.readFile(t, p+".gz")))
				if err != nil {
					t.Fatalf("%s.gz: %v", p, err)
				}
				plain, err := io.ReadAll(zr)
				if err != nil || !bytes.Equal(plain, r.readFile(t, p)) {
					t.Errorf("%s.gz does not decode to %s: %v", p, p, err)
				}
			}
		}
	}
	check(t)

	// An older build's state: the same generations marked without a
	// layout, and no .gz pointers.
	var writes []store.LocalWrite
	for _, prefix := range []string{"l/igen/c/", "l/idx/c/"} {
		err := r.st.Scan(ctx, []byte(prefix), func(k, v []byte) error {
			switch key := string(k); {
			case strings.HasSuffix(key, ".gz"):
				writes = append(writes, store.LocalWrite{Key: bytes.Clone(k)})
			case prefix == "l/igen/c/":
				gen, _, _ := strings.Cut(string(v), "/")
				writes = append(writes, store.LocalWrite{Key: bytes.Clone(k), Value: []byte(gen)})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := r.st.WriteLocal(ctx, writes); err != nil {
		t.Fatal(err)
	}
	r.ix = indexer.New(r.cat, r.st, testlog.New(t, slog.LevelWarn)) // the upgraded node starts
	if _, err := r.ix.File(ctx, "c", "linux-64/repodata.json.gz"); err != indexer.ErrNotFound {
		t.Fatalf("old state still has a .gz: %v", err)
	}
	if ok, _ := r.ix.Fresh(ctx, "c", "linux-64"); ok {
		t.Fatal("an index of an older layout counts as fresh")
	}
	if err := r.ix.Reconcile(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if got := r.ix.SubdirBuilds(); got != 2 {
		t.Errorf("upgrade rebuilt %d subdirs, want 2", got)
	}
	check(t)
	if err := r.ix.Reconcile(ctx, "c"); err != nil || r.ix.SubdirBuilds() != 2 {
		t.Errorf("second reconcile after the upgrade rebuilt: %v %d", err, r.ix.SubdirBuilds())
	}
}
