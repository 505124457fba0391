package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/condamesh/condamesh/store"
)

// restoreHeapBound is the Go heap (HeapInuse) a restore of a 1,000,000-record
// snapshot may peak at, the test process and both stores included. The
// one-batch restore this replaced peaked at several times that.
const restoreHeapBound = 64 << 20

// fillRecords writes n small catalog-like records under m/ through
// ApplyBatch, the last batch at index n.
func fillRecords(t testing.TB, s *store.Store, n int) {
	t.Helper()
	ctx := context.Background()
	const per = 10000
	for i := 0; i < n; i += per {
		b := s.NewBatch()
		for j := i; j < min(i+per, n); j++ {
			k := fmt.Appendf(nil, "m/v/chan/linux-64/pkg-%07d-1.0-0.conda", j)
			v := fmt.Appendf(nil, `{"size":%d,"sha256":"%064x"}`, j, j)
			if err := b.Set(k, v); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.ApplyBatch(ctx, uint64(min(i+per, n)), b); err != nil {
			t.Fatal(err)
		}
	}
}

// writeSnapshot streams s's snapshot into a file and returns its path.
func writeSnapshot(t testing.TB, s *store.Store) string {
	t.Helper()
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "snap")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	if err := sn.WriteTo(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// digest hashes the replicated keyspace and returns its record count too.
func digest(t testing.TB, s *store.Store) (string, int) {
	t.Helper()
	h := sha256.New()
	n := 0
	err := s.Scan(context.Background(), []byte(store.ReplicatedPrefix), func(k, v []byte) error {
		n++
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(v), v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), n
}

// heapPeak samples HeapInuse until the returned stop is called, which
// answers the largest value seen.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak
	}
}

// TestRestoreBoundedMemory restores a snapshot of 1,000,000 records into a
// fresh store and checks the Go heap stayed under restoreHeapBound and the
// copy is exact. The snapshot is read from a file, as Raft hands it over.
func TestRestoreBoundedMemory(t *testing.T) {
	ctx := context.Background()
	const n = 1_000_000
	src := mustOpen(t, store.Config{Dir: t.TempDir()})
	fillRecords(t, src, n)
	want, _ := digest(t, src)
	path := writeSnapshot(t, src)
	_ = src.Close()

	dst := mustOpen(t, store.Config{Dir: t.TempDir()})
	defer dst.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stop := heapPeak()
	err = dst.Restore(ctx, f)
	peak := stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("peak HeapInuse during restore: %.1f MiB (bound %d MiB)", float64(peak)/(1<<20), restoreHeapBound>>20)
	if peak >= restoreHeapBound {
		t.Fatalf("restore peaked at %.1f MiB of Go heap, bound %d MiB", float64(peak)/(1<<20), restoreHeapBound>>20)
	}
	got, count := digest(t, dst)
	if got != want || count != n {
		t.Fatalf("restored %d records, digest %s; want %d, %s", count, got, n, want)
	}
	if idx, _ := dst.AppliedIndex(ctx); idx != n {
		t.Fatalf("applied index %d, want %d", idx, n)
	}
}

// failingReader delivers the first n bytes of r, then fails.
type failingReader struct {
	r io.Reader
	n int64
}

var errReaderBroke = errors.New("reader broke")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errReaderBroke
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	m, err := f.r.Read(p)
	f.n -= int64(m)
	return m, err
}

// TestRestoreFailureKeepsState: a snapshot that is truncated, corrupt, or
// whose reader fails after several table files were written leaves the
// store exactly as it was (old records, old applied index, so the cluster
// sees it is behind and restores again), with no table files left behind,
// also after a reopen.
func TestRestoreFailureKeepsState(t *testing.T) {
	ctx := context.Background()
	src := mustOpen(t, store.Config{Dir: t.TempDir()})
	fillRecords(t, src, 400_000) // about 30 MiB of records: several table files
	path := writeSnapshot(t, src)
	_ = src.Close()
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(full)
	flipped[len(flipped)-1] ^= 0xff
	cases := []struct {
		name string
		r    func() io.Reader
		want error
	}{
		{"truncated", func() io.Reader { return bytes.NewReader(full[:len(full)*2/3]) }, store.ErrBadSnapshot},
		{"bad checksum", func() io.Reader { return bytes.NewReader(flipped) }, store.ErrBadSnapshot},
		{"reader fails mid-way", func() io.Reader { return &failingReader{r: bytes.NewReader(full), n: int64(len(full) - 100)} }, store.ErrBadSnapshot},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			dst := mustOpen(t, store.Config{Dir: dir})
			fillRecords(t, dst, 1000)
			before, _ := digest(t, dst)
			if err := dst.Restore(ctx, c.r()); !errors.Is(err, c.want) {
				t.Fatalf("restore: %v, want %v", err, c.want)
			}
			check := func(s *store.Store) {
				t.Helper()
				if got, _ := digest(t, s); got != before {
					t.Fatal("a failed restore changed the replicated keyspace")
				}
				if idx, _ := s.AppliedIndex(ctx); idx != 1000 {
					t.Fatalf("applied index %d after a failed restore, want 1000", idx)
				}
				if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
					t.Fatalf("restore left %d files in tmp/", len(left))
				}
			}
			check(dst)
			_ = dst.Close()
			dst = mustOpen(t, store.Config{Dir: dir})
			defer dst.Close()
			check(dst)
		})
	}
}

// crashingReader delivers r and, each time the bytes read so far pass the
// next offset in at, takes a crash image of fs (what a power cut at that
// moment would leave on disk).
type crashingReader struct {
	r      io.Reader
	fs     *vfs.MemFS
	at     []int64
	read   int64
	images []*vfs.MemFS
}

func (c *crashingReader) Read(p []byte) (int, error) {
	for len(c.at) > 0 && c.read >= c.at[0] {
		c.images = append(c.images, c.fs.CrashClone(vfs.CrashCloneCfg{}))
		c.at = c.at[1:]
	}
	if len(c.at) > 0 && int64(len(p)) > c.at[0]-c.read {
		p = p[:c.at[0]-c.read]
	}
	n, err := c.r.Read(p)
	c.read += int64(n)
	return n, err
}

// TestRestoreCrash takes crash images of the filesystem while a restore runs
// (before the first table file is done, after several, just before the
// checksum) and after it returned: a store opened on an image taken during
// the restore holds the old state and old applied index and no leftover
// table files; one taken after holds the new state.
func TestRestoreCrash(t *testing.T) {
	ctx := context.Background()
	src := mustOpen(t, store.Config{Dir: "/src", FS: vfs.NewMem()})
	fillRecords(t, src, 300_000)
	want, _ := digest(t, src)
	var snap bytes.Buffer
	sn, err := src.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sn.WriteTo(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	sn.Close()
	_ = src.Close()

	fs := vfs.NewCrashableMem()
	dst := mustOpen(t, store.Config{Dir: "/d", FS: fs})
	fillRecords(t, dst, 1000)
	before, _ := digest(t, dst)
	size := int64(snap.Len())
	cr := &crashingReader{r: &snap, fs: fs, at: []int64{1 << 10, size / 2, size - 40}}
	if err := dst.Restore(ctx, cr); err != nil {
		t.Fatal(err)
	}
	after := fs.CrashClone(vfs.CrashCloneCfg{})
	_ = dst.Close()
	if len(cr.images) != 3 {
		t.Fatalf("%d crash images, want 3", len(cr.images))
	}
	for i, img := range append(cr.images, after) {
		s := mustOpen(t, store.Config{Dir: "/d", FS: img})
		wantDigest, wantIdx := before, uint64(1000)
		if img == after {
			wantDigest, wantIdx = want, 300_000
		}
		if got, _ := digest(t, s); got != wantDigest {
			t.Fatalf("image %d: replicated keyspace is neither the old nor the new one as expected", i)
		}
		if idx, _ := s.AppliedIndex(ctx); idx != wantIdx {
			t.Fatalf("image %d: applied index %d, want %d", i, idx, wantIdx)
		}
		if left, _ := img.List("/d/tmp"); len(left) != 0 {
			t.Fatalf("image %d: tmp/ holds %v after Open", i, left)
		}
		_ = s.Close()
	}
}

// BenchmarkRestore restores a snapshot of 1,000,000 small records from a
// file into a fresh store per iteration and reports records/s and the peak
// Go heap (HeapInuse) seen during the restores.
func BenchmarkRestore(b *testing.B) {
	ctx := context.Background()
	const n = 1_000_000
	src := mustOpen(b, store.Config{Dir: b.TempDir()})
	fillRecords(b, src, n)
	path := writeSnapshot(b, src)
	_ = src.Close()
	var elapsed time.Duration
	var peak uint64
	for range b.N {
		b.StopTimer()
		dst := mustOpen(b, store.Config{Dir: b.TempDir()})
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		stop := heapPeak()
		b.StartTimer()
		start := time.Now()
		err = dst.Restore(ctx, f)
		elapsed += time.Since(start)
		b.StopTimer()
		peak = max(peak, stop())
		_ = f.Close()
		_ = dst.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}
