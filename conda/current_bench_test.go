package conda_test

import (
	"bytes"
	"context"
	"crypto/sha256"
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
	type scanned struct {
		l     *conda.Latest
		names map[string][32]byte
	}
	latest := func(cfg forgegen.Config) scanned {
		c, err := forgegen.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := c.WriteRepodata(context.Background(), &buf, "linux-64", nil); err != nil {
			b.Fatal(err)
		}
		var l conda.Latest
		ds := map[string]*conda.NameDigest{}
		if _, err := conda.ScanShardPairs(bytes.NewReader(buf.Bytes()), conda.ScanOptions{SumJSON: true}, func(pr *conda.PairRecord) error {
			l.AddPair(pr)
			if ds[pr.Name] == nil {
				ds[pr.Name] = conda.NewNameDigest()
			}
			ds[pr.Name].Add(pr.Filename, pr.JSONSum)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		names := map[string][32]byte{}
		for n, d := range ds {
			names[n] = d.Sum()
		}
		return scanned{&l, names}
	}
	cfg := forgegen.Config{Seed: 1, Records: n}
	before := latest(cfg)
	cfg.Change = &forgegen.Change{Subdir: "linux-64", Index: n / 2}
	after := latest(cfg)
	var cur []byte
	b.Run("afresh", func(b *testing.B) {
		for b.Loop() {
			cur = before.l.CurrentRepodata("linux-64")
		}
		b.ReportMetric(float64(len(cur))/1e6, "MB")
	})
	b.Run("cached-one-record-change", func(b *testing.B) {
		var c conda.CurrentCache
		var err error
		if cur, _, err = c.Build("linux-64", before.names, before.l, nil); err != nil {
			b.Fatal(err)
		}
		for i := 0; b.Loop(); i++ {
			s := after
			if i%2 == 1 {
				s = before
			}
			var encoded int
			if cur, encoded, err = c.Build("linux-64", s.names, s.l, cur); err != nil || encoded > 1 {
				b.Fatalf("%d names encoded: %v", encoded, err)
			}
		}
	})
	b.Run("zst", func(b *testing.B) {
		for b.Loop() {
			_ = conda.AppendZstd(nil, cur)
		}
	})
}

// BenchmarkScanForge measures ScanShardPairs and ScanRawRecords over a
// conda-forge-shaped linux-64 index (CURRENT_RECORDS records), on one
// goroutine.
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
	b.Run("transcoded", func(b *testing.B) {
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
	})
	// What a proxy does after a small change: cut records out and digest
	// their JSON (ScanRawRecords).
	b.Run("raw-sha256", func(b *testing.B) {
		b.SetBytes(int64(buf.Len()))
		for b.Loop() {
			if _, err := conda.ScanRawRecords(bytes.NewReader(buf.Bytes()), conda.ScanOptions{}, func(r *conda.RawRecord) error {
				_ = sha256.Sum256(r.JSON)
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
