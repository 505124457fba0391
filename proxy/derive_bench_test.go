package proxy_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/testlog"
	"github.com/condamesh/condamesh/proxy"
	"github.com/condamesh/condamesh/store"
	"github.com/condamesh/condamesh/upstream"
)

// BenchmarkDeriveSet: a cold derived set of a conda-forge-shaped linux-64
// index (DERIVE_RECORDS records, default 100,000, over a twentieth as many
// names) served by a local HTTP upstream: the time until the shard index
// is served, and the Go heap high-water mark meanwhile.
func BenchmarkDeriveSet(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("DERIVE_RECORDS")); err == nil && v > 0 {
		n = v
	}
	// The upstream serves the index from a file: the heap measured is the
	// proxy's.
	file := b.TempDir() + "/repodata.json"
	if err := os.WriteFile(file, forgeLike(n), 0o644); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/c/linux-64/repodata.json" {
			http.ServeFile(w, r, file)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	for i := 0; b.Loop(); i++ {
		ctx := context.Background()
		st, err := store.Open(ctx, store.Config{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		cat := catalog.New(st, nil)
		prop := &applier{cat: cat}
		ch := createChannel(b, prop, cat, &v1.Channel{Name: "px", Ttl: 60, MirrorChannelUrl: srv.URL + "/c", MirrorMode: "proxy"})
		p := proxy.New(proxy.Config{Logger: testlog.New(b, slog.LevelInfo)}, cat, st, prop, upstream.New(upstream.Config{}))
		runtime.GC()
		var peak uint64
		stop := make(chan struct{})
		go func() {
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		start := time.Now()
		if _, err := p.Get(ctx, ch, "linux-64/repodata_shards.msgpack.zst"); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		close(stop)
		b.ReportMetric(took.Seconds(), "s-to-shard-index")
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		p.Close()
		_ = st.Close()
	}
}

// forgeLike is a conda-forge-shaped repodata.json of n records.
func forgeLike(n int) []byte {
	names := max(n/20, 1)
	recs := make([]conda.Record, 0, n)
	for i := range n {
		name := fmt.Sprintf("pkg-%05d", i%names)
		ver := fmt.Sprintf("%d.%d.%d", i/names%7, i/names/7%10, i%3)
		build := fmt.Sprintf("py3%dh%07x_%d", 9+i%4, i*2654435761%(1<<28), i%3)
		fn := fmt.Sprintf("%s-%s-%s.conda", name, ver, build)
		if i%3 == 0 {
			fn = fmt.Sprintf("%s-%s-%s.tar.bz2", name, ver, build)
		}
		recs = append(recs, conda.Record{Filename: fn, Subdir: "linux-64", Fields: map[string]any{
			"name": name, "version": ver, "build": build, "build_number": int64(i % 3), "subdir": "linux-64",
			"depends":    []any{"python >=3.9,<3.10.0a0", "python_abi 3.9.* *_cp39", fmt.Sprintf("pkg-%05d >=1.2", (i*7)%names), "libgcc-ng >=12", "numpy >=1.21"},
			"constrains": []any{fmt.Sprintf("pkg-%05d <2", (i*13)%names)},
			"license":    "BSD-3-Clause", "license_family": "BSD", "timestamp": int64(1600000000000 + i),
			"md5": fmt.Sprintf("%032x", i), "sha256": fmt.Sprintf("%064x", i), "size": int64(10000 + i),
		}})
	}
	return conda.Repodata("linux-64", recs)
}
