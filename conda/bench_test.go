package conda

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkRepodata10k measures a full subdir regeneration for 10,000
// records: repodata.json and its .zst and .bz2 forms, and the shards.
func BenchmarkRepodata10k(b *testing.B) {
	recs := synthRecords(10000, "linux-64")
	b.ResetTimer()
	for b.Loop() {
		js := Repodata("linux-64", recs)
		_ = Zstd(js)
		_ = Bzip2(js)
		if _, _, err := Shards("linux-64", recs); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(js)))
	}
}

// BenchmarkReadPackage measures reading the metadata of small packages.
func BenchmarkReadPackage(b *testing.B) {
	s := testSpec()
	for _, ext := range []string{ExtTarBz2, ExtConda} {
		data := build(b, s, ext)
		fn := s.Name + "-" + s.Version + "-" + s.Build + ext
		b.Run(ext, func(b *testing.B) {
			for b.Loop() {
				if _, err := readPkg(data, fn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseRepodata10k measures reading an upstream's repodata.json
// of 10,000 records (a mirror sync plans from it).
func BenchmarkParseRepodata10k(b *testing.B) {
	js := Repodata("linux-64", synthRecords(10000, "linux-64"))
	b.SetBytes(int64(len(js)))
	for b.Loop() {
		if _, err := ParseRepodata(js); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScanShardPairs measures the proxy's scan of an upstream index
// of 50,000 records into shard entries, read in windows as from a file, on
// one goroutine and with two transcoding workers (ScanOptions.Workers).
func BenchmarkScanShardPairs(b *testing.B) {
	js := Repodata("linux-64", synthRecords(50000, "linux-64"))
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers-%d", workers), func(b *testing.B) {
			b.SetBytes(int64(len(js)))
			for b.Loop() {
				n := 0
				if _, err := ScanShardPairs(bytes.NewReader(js), ScanOptions{Workers: workers}, func(*PairRecord) error { n++; return nil }); err != nil || n != 50000 {
					b.Fatal(n, err)
				}
			}
		})
	}
}
