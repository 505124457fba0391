package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/condamesh/condamesh/store"
	"github.com/condamesh/condamesh/store/storetest"
)

func TestConformance(t *testing.T) {
	const threshold = 64 << 10
	t.Run("Disk", func(t *testing.T) {
		storetest.Run(t, threshold, func(t *testing.T) *store.Store {
			return mustOpen(t, store.Config{Dir: dirFor(t), InlineThreshold: threshold})
		})
	})
	t.Run("MemFS", func(t *testing.T) {
		fss := map[string]vfs.FS{}
		storetest.Run(t, threshold, func(t *testing.T) *store.Store {
			fs, ok := fss[t.Name()]
			if !ok {
				fs = vfs.NewMem()
				fss[t.Name()] = fs
			}
			return mustOpen(t, store.Config{Dir: "/data", FS: fs, InlineThreshold: threshold})
		})
	})
}

var dirs = map[string]string{}

// dirFor returns one temp dir per subtest, so reopening finds the same data.
func dirFor(t *testing.T) string {
	if d, ok := dirs[t.Name()]; ok {
		return d
	}
	d := t.TempDir()
	dirs[t.Name()] = d
	return d
}

func mustOpen(t testing.TB, cfg store.Config) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRecoverAfterCrash lays out what a crash can leave behind (a half-written
// temp file, a published file whose index record was never written, a file
// whose bytes do not match its name) and checks Open repairs all three.
func TestRecoverAfterCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	good := bytes.Repeat([]byte("good"), 100_000)
	sum := sha256.Sum256(good)
	goodCID, _ := store.CIDFromSHA256(sum[:])
	badSum := sha256.Sum256([]byte("other"))
	badCID, _ := store.CIDFromSHA256(badSum[:])
	s := mustOpen(t, store.Config{Dir: dir, InlineThreshold: 1024})
	_ = s.Close()
	write := func(p string, b []byte) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shard := func(c string) string { return c[len(c)-2:] }
	write(filepath.Join(dir, "tmp", "half"), good[:1000])
	write(filepath.Join(dir, "blobs", shard(goodCID.String()), goodCID.String()), good)
	write(filepath.Join(dir, "blobs", shard(badCID.String()), badCID.String()), []byte("not other"))

	s = mustOpen(t, store.Config{Dir: dir, InlineThreshold: 1024})
	defer s.Close()
	if got, err := s.ReadAll(ctx, goodCID); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("verified orphan file not recovered: %v", err)
	}
	if s.Has(ctx, badCID) {
		t.Fatal("file with wrong bytes became visible")
	}
	if _, err := os.Stat(filepath.Join(dir, "blobs", shard(badCID.String()), badCID.String())); !os.IsNotExist(err) {
		t.Fatalf("corrupt file not removed: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("temp files left: %d", len(left))
	}
}

// TestOpenRefusesBadConfig: a configuration that cannot work is refused
// before anything is created.
func TestOpenRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]store.Config{
		"no dir":             {},
		"negative inline":    {Dir: "/d", InlineThreshold: -1},
		"negative cache":     {Dir: "/d", CacheSize: -1},
		"negative memtable":  {Dir: "/d", MemTableSize: -1},
		"memtable too large": {Dir: "/d", MemTableSize: 4 << 30},
	} {
		fs := vfs.NewMem()
		cfg.FS = fs
		if s, err := store.Open(context.Background(), cfg); err == nil {
			s.Close()
			t.Errorf("%s: opened", name)
		}
		if ls, _ := fs.List("/"); len(ls) != 0 {
			t.Errorf("%s: created %v", name, ls)
		}
	}
}

// TestPutInline: with PutOptions.Inline a blob larger than the store's
// InlineThreshold (up to MaxInline) is kept in the index, no file written,
// and reads back after a reopen; a larger one is a file as usual.
func TestPutInline(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := mustOpen(t, store.Config{Dir: dir, InlineThreshold: 1024})
	for i, tc := range []struct {
		size   int
		inline bool
		want   bool
	}{
		{64 << 10, false, false},
		{64 << 10, true, true},
		{store.MaxInline, true, true},
		{store.MaxInline + 1, true, false},
	} {
		b := bytes.Repeat([]byte{byte(i), 7}, tc.size/2+tc.size%2)[:tc.size]
		info, err := s.Put(ctx, bytes.NewReader(b), store.PutOptions{Inline: tc.inline, Deferred: tc.inline, WantSize: int64(tc.size), WantSizeSet: true})
		if err != nil || info.Inline != tc.want {
			t.Fatalf("%d bytes, Inline %v: inline %v (%v), want %v", tc.size, tc.inline, info.Inline, err, tc.want)
		}
		_, statErr := os.Stat(filepath.Join(dir, "blobs", info.CID.String()[len(info.CID.String())-2:], info.CID.String()))
		if tc.want != os.IsNotExist(statErr) {
			t.Fatalf("%d bytes, Inline %v: file written: %v", tc.size, tc.inline, statErr == nil)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = mustOpen(t, store.Config{Dir: dir, InlineThreshold: 1024})
	defer s.Close()
	b := bytes.Repeat([]byte{2, 7}, store.MaxInline/2)
	sum := sha256.Sum256(b)
	c, _ := store.CIDFromSHA256(sum[:])
	if got, err := s.ReadAll(ctx, c); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("inline blob of MaxInline bytes after a reopen: %v", err)
	}
}

// TestBatchGetMany: GetMany answers what Get answers for every key (the
// store's, the batch's pending writes and deletions, empty values,
// duplicates, keys outside every range), in the caller's order.
func TestBatchGetMany(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := mustOpen(t, store.Config{Dir: dir})
	b := s.NewBatch()
	for i := range 200 {
		if err := b.Set(fmt.Appendf(nil, "m/k%04d", i), fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ApplyBatch(ctx, 1, b); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, store.Config{Dir: dir}) // the first keys in an sstable (replayed), the batch's in memory
	defer s.Close()
	b = s.NewBatch()
	defer b.Close()
	for i := 100; i < 300; i += 3 {
		if err := b.Set(fmt.Appendf(nil, "m/k%04d", i), fmt.Appendf(nil, "new%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"m/k0007", "m/k0150"} {
		if err := b.Delete([]byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Set([]byte("m/k0008"), nil); err != nil {
		t.Fatal(err)
	}
	for _, keys := range [][]string{
		nil,
		{"m/k0001"},
		{"m/zzz", "m/a", "m/k0001"},
		{"m/k0299", "m/k0000", "m/k0007", "m/k0008", "m/k0150", "m/k0151", "m/k0100", "m/k0100", "m/k0350", "m/k0199", "m/k0102"},
	} {
		bs := make([][]byte, len(keys))
		for i, k := range keys {
			bs[i] = []byte(k)
		}
		got, err := b.GetMany(bs)
		if err != nil || len(got) != len(keys) {
			t.Fatalf("GetMany(%q): %d values, %v", keys, len(got), err)
		}
		for i, k := range keys {
			want, err := b.Get([]byte(k))
			if errors.Is(err, store.ErrNotFound) {
				want = nil
			} else if err != nil {
				t.Fatal(err)
			} else if want == nil {
				want = []byte{}
			}
			if (got[i] == nil) != (want == nil) || !bytes.Equal(got[i], want) {
				t.Errorf("GetMany(%q)[%d] (%s) = %q, Get = %q", keys, i, k, got[i], want)
			}
		}
	}
}
