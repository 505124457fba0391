package conda

import "testing"

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
