package conda_test

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/conda/forgegen"
)

// BenchmarkCurrentRepodataForge measures current_repodata.json of a
// conda-forge-shaped linux-64 index (CURRENT_RECORDS records, default
// 100,000) from the latest records a scan collected: made afresh, with a
// CurrentCache after a one-record change (the record half-way, as
// BenchmarkForgeScale changes), and its .zst.
func BenchmarkCurrentRepodataForge(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("CURRENT_RECORDS")); err == nil && v > 0 {
		n = v
	}
	latest := func(cfg forgegen.Config) *conda.Latest {
		c, err := forgegen.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := c.WriteRepodata(context.Background(), &buf, "linux-64", nil); err != nil {
			b.Fatal(err)
		}
		var l conda.Latest
		if _, err := conda.ScanShardPairs(bytes.NewReader(buf.Bytes()), conda.ScanOptions{}, func(pr *conda.PairRecord) error {
			l.AddPair(pr)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		return &l
	}
	cfg := forgegen.Config{Seed: 1, Records: n}
	before := latest(cfg)
	cfg.Change = &forgegen.Change{Subdir: "linux-64", Index: n / 2}
	after := latest(cfg)
	var cur []byte
	b.Run("afresh", func(b *testing.B) {
		for b.Loop() {
			cur = before.CurrentRepodata("linux-64")
		}
		b.ReportMetric(float64(len(cur))/1e6, "MB")
	})
	b.Run("cached-one-record-change", func(b *testing.B) {
		var c conda.CurrentCache
		cur, _ = c.Build("linux-64", before, nil)
		for i := 0; b.Loop(); i++ {
			l := after
			if i%2 == 1 {
				l = before
			}
			var encoded int
			if cur, encoded = c.Build("linux-64", l, cur); encoded > 1 {
				b.Fatalf("%d names encoded", encoded)
			}
		}
	})
	b.Run("zst", func(b *testing.B) {
		for b.Loop() {
			_ = conda.AppendZstd(nil, cur)
		}
	})
}

// BenchmarkScanForge measures ScanShardPairs over a conda-forge-shaped
// linux-64 index (CURRENT_RECORDS records), on one goroutine.
func BenchmarkScanForge(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("CURRENT_RECORDS")); err == nil && v > 0 {
		n = v
	}
	c, err := forgegen.New(forgegen.Config{Seed: 1, Records: n})
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := c.WriteRepodata(context.Background(), &buf, "linux-64", nil); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		var l conda.Latest
		if _, err := conda.ScanShardPairs(bytes.NewReader(buf.Bytes()), conda.ScanOptions{}, func(pr *conda.PairRecord) error {
			l.AddPair(pr)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}
