package conda

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/vmihailenco/msgpack/v5"
)

func FuzzParseFilename(f *testing.F) {
	for _, s := range []string{
		"numpy-1.26.4-py312h8753938_0.conda", "zlib-1.3-h0_0.tar.bz2", "a-b", "x-1-0.zip", "../a-1-0.conda",
		"a/b-1-0.conda", "", ".a-1-0.conda", "a-1-0.tar.bz2.conda", "-1-0.conda", "a-1!2+3-0.conda",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fn, err := ParseFilename(s)
		if err != nil {
			return
		}
		if fn.String() != s {
			t.Fatalf("String() = %q, want %q", fn.String(), s)
		}
		if !ValidPackageName(fn.Name) || !IsPackageFile(s) {
			t.Fatalf("accepted %q with invalid parts %+v", s, fn)
		}
		again, err := ParseFilename(fn.String())
		if err != nil || again != fn {
			t.Fatalf("reparse %q: %+v %v", s, again, err)
		}
	})
}

// FuzzReadPackage reads each input with ReadPackage (metadata only) and
// VerifyPackage (the whole archive). Whatever VerifyPackage accepts,
// ReadPackage accepts with the same info/index.json; what only
// ReadPackage accepts, VerifyPackage refuses as a bad or unsafe archive.
func FuzzReadPackage(f *testing.F) {
	s := condatest.Spec{
		Name: "fz", Version: "1.0", Build: "0", Subdir: "linux-64",
		Files:      map[string]string{"bin/fz": "x"},
		RunExports: map[string]any{"weak": []any{"fz"}},
	}
	tb := condatest.TarBz2(f, s)
	cd := condatest.Conda(f, s)
	evil := s
	evil.Trailing = []condatest.Member{{Name: "../../evil", Content: "e"}, {Name: "l", Type: tar.TypeSymlink, Linkname: "/etc"}}
	f.Add(tb, false)
	f.Add(cd, true)
	f.Add(tb[:len(tb)/2], false)
	f.Add(cd[:len(cd)-30], true)
	f.Add(condatest.TarBz2(f, evil), false)
	f.Add(condatest.Conda(f, evil), true)
	f.Add(append(bytes.Clone(tb), "junk"...), false)
	f.Add([]byte("dfdf"), false)
	f.Add([]byte("BZh9"), false)
	f.Add([]byte("PK\x05\x06"+string(make([]byte, 18))), true)
	f.Fuzz(func(t *testing.T, b []byte, conda bool) {
		fn := "fz-1.0-0.tar.bz2"
		if conda {
			fn = "fz-1.0-0.conda"
		}
		info, err := ReadPackage(bytes.NewReader(b), int64(len(b)), fn)
		full, ferr := VerifyPackage(bytes.NewReader(b), int64(len(b)), fn, VerifyOptions{MaxUnpacked: 4 << 20})
		switch {
		case ferr == nil && err != nil:
			t.Fatalf("VerifyPackage accepted what ReadPackage refuses: %v", err)
		case ferr == nil && !bytes.Equal(full.IndexJSON, info.IndexJSON):
			t.Fatalf("VerifyPackage and ReadPackage read different index.json")
		case ferr != nil && err == nil && !errors.Is(ferr, ErrBadArchive) && !errors.Is(ferr, ErrUnsafeArchive):
			t.Fatalf("VerifyPackage refused a readable package with an unclassified error: %v", ferr)
		}
		if err != nil {
			return
		}
		if info.Index["name"] != "fz" || info.Filename.String() != fn {
			t.Fatalf("accepted mismatching package: %v", info.Index)
		}
		r := NewRecord(info, Digests{Size: int64(len(b))})
		if _, err := ParseRepodata(Repodata("linux-64", []Record{r})); err != nil {
			t.Fatalf("repodata of a read package does not parse: %v", err)
		}
		checkShardable(t, []Record{r})
	})
}

func FuzzParseRepodata(f *testing.F) {
	f.Add(Repodata("noarch", synthRecords(5, "noarch")))
	f.Add([]byte(`{"info":{"subdir":"linux-64"},"packages":{"a-1-0.tar.bz2":{"name":"a","depends":[]}},"packages.conda":{},"removed":[],"repodata_version":1}`))
	f.Add([]byte(`{"packages":{"../a-1-0.tar.bz2":{}}}`))
	f.Add([]byte(`{"packages.conda":{"a-1-0.conda":{"sha256":"00","size":-1}}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"info":{"subdir":"noarch","base_url":"x"},"repodata_version":2,"removed":["a"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := ParseRepodata(b)
		if err != nil {
			return
		}
		recs := doc.Records()
		subdir := doc.Subdir
		if subdir == "" {
			subdir = "noarch"
		}
		out := Repodata(subdir, recs)
		if _, err := ParseRepodata(out); err != nil {
			t.Fatalf("regenerated repodata does not parse: %v\n%s", err, out)
		}
		_ = CurrentRepodata(subdir, recs)
		_ = ChannelData(nil, map[string][]Record{subdir: recs}, nil)
		checkShardable(t, recs)
	})
}

// checkShardable fails if any record cannot be turned into a shard
// record. It skips the zstd step of Shards, which is slow to set up.
func checkShardable(t *testing.T, recs []Record) {
	t.Helper()
	for _, r := range recs {
		f, err := shardFields(r)
		if err != nil {
			t.Fatalf("shardFields: %v", err)
		}
		if _, err := appendMsgpack(nil, f); err != nil {
			t.Fatalf("appendMsgpack: %v", err)
		}
	}
}

// FuzzScanRepodata holds the record-at-a-time scan behind ParseRepodata to
// the whole JSON tree: a document it accepts is valid JSON whose sections
// and header are exactly what it passed on, and invalid JSON is refused.
func FuzzScanRepodata(f *testing.F) {
	f.Add(Repodata("noarch", synthRecords(5, "noarch")))
	f.Add([]byte(`{"packages.conda":{},"info":{"subdir":"linux-64","base_url":"b"},"packages":{"a-1-0.tar.bz2":{"name":"a","depends":["x"],"size":3}},"x":[1,{"y":null}],"removed":["r"],"repodata_version":2} `))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{},"a-1-0.tar.bz2":{}}}`))
	f.Add([]byte(`{"packages":{},"packages":{}}`))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{"name":"b"}}}`))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{}}`))
	f.Add([]byte(`{"packages":[]}`))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{}}} x`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var passed []Record
		doc, err := ScanRepodata(b, func(r Record) error { passed = append(passed, r); return nil })
		tree, jerr := parseJSON(b)
		if jerr != nil {
			if err == nil {
				t.Fatalf("accepted invalid JSON (%v)", jerr)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, ErrBadRepodata) {
				t.Fatalf("refused without ErrBadRepodata: %v", err)
			}
			return
		}
		top := tree.(map[string]any)
		got := map[string]any{}
		for _, r := range passed {
			sec := "packages"
			if isConda(r.Filename) {
				sec = "packages.conda"
			}
			m, _ := got[sec].(map[string]any)
			if m == nil {
				m = map[string]any{}
				got[sec] = m
			}
			m[r.Filename] = r.Fields
			if s, _ := r.Fields["subdir"].(string); s != r.Subdir {
				t.Fatalf("%s: Subdir %q, field %v", r.Filename, r.Subdir, r.Fields["subdir"])
			}
		}
		for _, sec := range []string{"packages", "packages.conda"} {
			want, _ := top[sec].(map[string]any)
			have, _ := got[sec].(map[string]any)
			if len(want) != len(have) || (len(want) > 0 && !reflect.DeepEqual(want, have)) {
				t.Fatalf("%s: passed %d records, the document has %d (or they differ)", sec, len(have), len(want))
			}
		}
		info, _ := top["info"].(map[string]any)
		if s, _ := info["subdir"].(string); s != doc.Subdir {
			t.Fatalf("subdir %q, document %q", doc.Subdir, s)
		}
		if s, _ := info["base_url"].(string); s != doc.BaseURL {
			t.Fatalf("base_url %q, document %q", doc.BaseURL, s)
		}
		if n, _ := asInt64(top["repodata_version"]); n != doc.RepodataVersion {
			t.Fatalf("repodata_version %d, document %d", doc.RepodataVersion, n)
		}
		if l, _ := stringList(top["removed"]); !slices.Equal(l, doc.Removed) {
			t.Fatalf("removed %v, document %v", doc.Removed, l)
		}
	})
}

// FuzzScanRepodataReader holds the streaming scan to the in-memory one: fed
// in reads of one to a few bytes (so every value crosses window ends), it
// accepts exactly the documents ScanRepodata accepts, with the same records
// in the same order and the same header fields.
func FuzzScanRepodataReader(f *testing.F) {
	f.Add(Repodata("noarch", synthRecords(5, "noarch")), uint8(1))
	f.Add([]byte(`{"packages.conda":{},"info":{"subdir":"linux-64","base_url":"b"},"packages":{"a-1-0.tar.bz2":{"name":"a","depends":["x\"]"],"size":3}},"x":[1,{"y":null}],"removed":["r"],"repodata_version":2} `), uint8(3))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{},"a-1-0.tar.bz2":{}}}`), uint8(2))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{"x":1]}}}`), uint8(1))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{}}} x`), uint8(5))
	f.Add([]byte(`  [1, 2]`), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		var want, got []Record
		wdoc, werr := ScanRepodata(b, func(r Record) error { want = append(want, r); return nil })
		gdoc, gerr := ScanRepodataReader(&stepReader{b: b, step: int(step%7) + 1}, ScanOptions{}, func(r Record) error { got = append(got, r); return nil })
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("in memory: %v; streamed: %v", werr, gerr)
		}
		if werr != nil {
			if !errors.Is(gerr, ErrBadRepodata) {
				t.Fatalf("refused without ErrBadRepodata: %v", gerr)
			}
			return
		}
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("records differ: %d in memory, %d streamed", len(want), len(got))
		}
		if !reflect.DeepEqual(wdoc, gdoc) {
			t.Fatalf("header: %+v in memory, %+v streamed", wdoc, gdoc)
		}
		// With a filter: the records it wants, the same, in order.
		pick := func(fn string) bool { return len(fn)%2 == 0 }
		var picked []Record
		if _, err := ScanRepodataReader(&stepReader{b: b, step: int(step%5) + 1}, ScanOptions{Want: pick}, func(r Record) error { picked = append(picked, r); return nil }); err != nil {
			t.Fatalf("filtered scan refused what the full scan accepted: %v", err)
		}
		if wanted := filterRecords(pick, got); !reflect.DeepEqual(wanted, picked) {
			t.Fatalf("filtered scan: %d records, want %d", len(picked), len(wanted))
		}
	})
}

func filterRecords(pick func(string) bool, recs []Record) []Record {
	var out []Record
	for _, r := range recs {
		if pick(r.Filename) {
			out = append(out, r)
		}
	}
	return out
}

// stepReader returns at most step bytes per Read.
type stepReader struct {
	b    []byte
	step int
}

func (r *stepReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.step)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// FuzzScanShardPairs holds the transcoding scan to ScanRepodata followed
// by AppendShardPair: fed in reads of a few bytes, it accepts exactly the
// documents ScanRepodata accepts and gives, record by record in the same
// order, the same shard entry, name, version, build number and JSON; the
// current_repodata.json its records make equals Latest.Add's.
func FuzzScanShardPairs(f *testing.F) {
	f.Add(Repodata("noarch", synthRecords(5, "noarch")), uint8(1))
	f.Add([]byte(`{"packages.conda":{"a-1-0.conda":{"sha256":"`+strings.Repeat("Ab", 32)+`","md5":"`+strings.Repeat("0f", 16)+`","x":{"z":1,"y":[{"b":2,"a":[]}],"z":-3},"version":"","build_number":7}},"packages":{"a-1-0.tar.bz2":{"name":"a","depends":["x\"]"],"size":3,"size":4,"f":1.5e3,"u":18446744073709551615,"n":-9223372036854775809,"s":"\u00e9\ud800\"","t":true,"nil":null}}}`), uint8(3))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{},"a-1-0.tar.bz2":{}}}`), uint8(2))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{"x":1]}}}`), uint8(1))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{"size":-1}}}`), uint8(1))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{"size":-1,"size":2}}}`), uint8(1))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{"depends":["a",1]}}}`), uint8(4))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{"name":"b"}}}`), uint8(4))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":[]}}`), uint8(4))
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		var want []Record
		wdoc, werr := ScanRepodata(b, func(r Record) error { want = append(want, r); return nil })
		var got []PairRecord
		var gl Latest
		gdoc, gerr := ScanShardPairs(&stepReader{b: b, step: int(step%7) + 1}, ScanOptions{SumJSON: step%2 == 0}, func(r *PairRecord) error {
			if step%2 == 0 && r.JSONSum != sha256.Sum256(r.JSON) {
				t.Fatalf("%s: JSONSum is not the SHA-256 of its JSON", r.Filename)
			}
			r.JSONSum = [32]byte{}
			c := *r
			c.Version, c.Pair, c.JSON = bytes.Clone(r.Version), bytes.Clone(r.Pair), bytes.Clone(r.JSON)
			got = append(got, c)
			gl.AddPair(r)
			return nil
		})
		// The same on several goroutines (ScanOptions.Workers): the same
		// records in the same order, or a refusal.
		var par []PairRecord
		pdoc, perr := ScanShardPairs(&stepReader{b: b, step: int(step%5) + 1}, ScanOptions{Workers: 2 + int(step%3), SumJSON: step%2 == 1}, func(r *PairRecord) error {
			if step%2 == 1 && r.JSONSum != sha256.Sum256(r.JSON) {
				t.Fatalf("%s: JSONSum is not the SHA-256 of its JSON (workers)", r.Filename)
			}
			r.JSONSum = [32]byte{}
			c := *r
			c.Version, c.Pair, c.JSON = bytes.Clone(r.Version), bytes.Clone(r.Pair), bytes.Clone(r.JSON)
			par = append(par, c)
			return nil
		})
		if (werr == nil) != (gerr == nil) || (werr == nil) != (perr == nil) {
			t.Fatalf("ScanRepodata: %v; ScanShardPairs: %v; with workers: %v", werr, gerr, perr)
		}
		// Uncut (ScanRawRecords), then transcoded one by one
		// (TranscodeRecord): the same records, accepted alike.
		var raws []PairRecord
		var terr error
		_, rerr := ScanRawRecords(&stepReader{b: b, step: int(step%3) + 1}, ScanOptions{}, func(r *RawRecord) error {
			if !bytes.Equal(b[r.Offset:r.Offset+int64(len(r.JSON))], r.JSON) {
				t.Fatalf("%s: offset %d does not hold its JSON", r.Filename, r.Offset)
			}
			if terr != nil {
				return nil
			}
			pr, err := TranscodeRecord(r.Filename, bytes.Clone(r.JSON))
			if err != nil {
				if !errors.Is(err, ErrBadRepodata) {
					t.Fatalf("%s: refused without ErrBadRepodata: %v", r.Filename, err)
				}
				terr = err
				return nil
			}
			if pr.Name != r.Name || pr.Conda != r.Conda {
				t.Fatalf("%s: raw %s %v, transcoded %s %v", r.Filename, r.Name, r.Conda, pr.Name, pr.Conda)
			}
			raws = append(raws, *pr)
			return nil
		})
		if rerr != nil && !errors.Is(rerr, ErrBadRepodata) {
			t.Fatalf("ScanRawRecords refused without ErrBadRepodata: %v", rerr)
		}
		if (gerr == nil) != (rerr == nil && terr == nil) {
			t.Fatalf("ScanShardPairs: %v; ScanRawRecords: %v, TranscodeRecord: %v", gerr, rerr, terr)
		}
		if werr != nil {
			if !errors.Is(gerr, ErrBadRepodata) || !errors.Is(perr, ErrBadRepodata) {
				t.Fatalf("refused without ErrBadRepodata: %v; with workers: %v", gerr, perr)
			}
			if !reflect.DeepEqual(got, par) && !(len(got) == 0 && len(par) == 0) {
				t.Fatalf("records before the refusal: %d, with workers %d", len(got), len(par))
			}
			return
		}
		if !reflect.DeepEqual(gdoc, pdoc) || !(reflect.DeepEqual(got, par) || len(got) == 0 && len(par) == 0) {
			t.Fatalf("with workers: header %+v, %d records; without: %+v, %d records", pdoc, len(par), gdoc, len(got))
		}
		if !reflect.DeepEqual(got, raws) && !(len(got) == 0 && len(raws) == 0) {
			t.Fatalf("transcoded one by one: %d records, ScanShardPairs %d", len(raws), len(got))
		}
		if !reflect.DeepEqual(got, raws) && !(len(got) == 0 && len(raws) == 0) {
			t.Fatalf("transcoded one by one: %d records, ScanShardPairs %d", len(raws), len(got))
		}
		if !reflect.DeepEqual(wdoc, gdoc) {
			t.Fatalf("header: %+v, ScanShardPairs %+v", wdoc, gdoc)
		}
		if len(want) != len(got) {
			t.Fatalf("%d records, ScanShardPairs %d", len(want), len(got))
		}
		var wl Latest
		for i, w := range want {
			g := got[i]
			wl.Add(w)
			pair, err := AppendShardPair(nil, w)
			if err != nil {
				t.Fatalf("%s: AppendShardPair of an accepted record: %v", w.Filename, err)
			}
			if !bytes.Equal(pair, g.Pair) {
				t.Fatalf("%s: shard entry\n%x\nScanShardPairs\n%x", w.Filename, pair, g.Pair)
			}
			if g.Filename != w.Filename || g.Name != w.Name() || string(g.Version) != w.Version() || g.BuildNumber != w.BuildNumber() || g.Conda != isConda(w.Filename) {
				t.Fatalf("%s: got %s %s %s %d %v", w.Filename, g.Filename, g.Name, g.Version, g.BuildNumber, g.Conda)
			}
			if v, err := parseJSON(g.JSON); err != nil || !reflect.DeepEqual(v, w.Fields) {
				t.Fatalf("%s: JSON %q (%v)", w.Filename, g.JSON, err)
			}
		}
		if w, g := wl.CurrentRepodata("noarch"), gl.CurrentRepodata("noarch"); !bytes.Equal(w, g) {
			t.Fatalf("current_repodata.json differs:\n%s\nAddPair:\n%s", w, g)
		}
	})
}

// FuzzUpstreamShards: an upstream's shard index and shards (any msgpack,
// compressed) are read without panics and within what they hold
// (mpread.go); what an index says survives ShardIndex's encoding
// unchanged; and on every well-formed document (each length consistent
// with the bytes, a map at the top, no key twice there) both readers
// agree with vmihailenco/msgpack's Unmarshal, the reference.
func FuzzUpstreamShards(f *testing.F) {
	index, shards, err := Shards("noarch", synthRecords(5, "noarch"))
	if err != nil {
		f.Fatal(err)
	}
	seed := func(b []byte) {
		raw, err := unzstd(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	seed(index)
	for _, sh := range shards {
		seed(sh)
	}
	f.Add([]byte{0x81, 0xa6, 's', 'h', 'a', 'r', 'd', 's', 0x81, 0xa1, 'a', 0xa3, 'x', 'y', 'z'})
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x81, 0xc6, 0x3c, 0x9c, 0xb9, 0x21, 0x7a})
	f.Fuzz(func(t *testing.T, raw []byte) {
		b := AppendZstd(nil, raw)
		digests, _, derr := ShardIndexDigests(b)
		if derr == nil {
			in := make(map[string][]byte, len(digests))
			for name, d := range digests {
				in[name] = d[:]
			}
			again, err := ShardIndex("noarch", in)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			back, base, err := ShardIndexDigests(again)
			if err != nil || !maps.Equal(back, digests) || base != "./shards/" {
				t.Fatalf("round trip: %v, %d names, want %d", err, len(back), len(digests))
			}
		}
		entries, eerr := ShardEntries(b)
		// One file alone says the same as the whole shard.
		for fn, want := range entries {
			e, ok, err := ShardEntryOf(b, fn)
			if err != nil || !ok || !bytes.Equal(e.SHA256, want.SHA256) || e.Size != want.Size {
				t.Fatalf("ShardEntryOf(%q): %+v %v %v, ShardEntries %+v", fn, e, ok, err, want)
			}
		}
		if _, ok := entries["\x00absent"]; eerr == nil && !ok {
			if _, found, err := ShardEntryOf(b, "\x00absent"); found || err != nil {
				t.Fatalf("ShardEntryOf of an absent file: %v %v", found, err)
			}
		}
		if !wellFormedDoc(raw) {
			return
		}
		var idx struct {
			Shards map[string][]byte `msgpack:"shards"`
		}
		if err := msgpack.Unmarshal(raw, &idx); (err == nil) != (derr == nil) {
			t.Fatalf("shard index: reference %v, ShardIndexDigests %v", err, derr)
		} else if err == nil {
			want := map[string][32]byte{}
			for name, d := range idx.Shards {
				if len(d) == 32 {
					want[name] = [32]byte(d)
				}
			}
			if !maps.Equal(want, digests) {
				t.Fatalf("shard index: reference %v, ShardIndexDigests %v", want, digests)
			}
		}
		var doc struct {
			Packages      map[string]ShardEntry `msgpack:"packages"`
			PackagesConda map[string]ShardEntry `msgpack:"packages.conda"`
		}
		if err := msgpack.Unmarshal(raw, &doc); (err == nil) != (eerr == nil) {
			t.Fatalf("shard: reference %v, ShardEntries %v", err, eerr)
		} else if err == nil {
			want := map[string]ShardEntry{}
			maps.Copy(want, doc.PackagesConda)
			maps.Copy(want, doc.Packages)
			if !maps.EqualFunc(want, entries, func(a, b ShardEntry) bool { return bytes.Equal(a.SHA256, b.SHA256) && a.Size == b.Size }) {
				t.Fatalf("shard: reference %v, ShardEntries %v", want, entries)
			}
		}
	})
}

// wellFormedDoc: raw is one MessagePack map whose every length fits the
// bytes (so the reference cannot be made to allocate more than it holds)
// and that has no key twice.
func wellFormedDoc(raw []byte) bool {
	if (&mpReader{b: raw}).skip() != nil || len(raw) == 0 || raw[0] == 0xc0 {
		return false
	}
	seen := map[string]bool{}
	dup := false
	err := eachMember(raw, func(k string, r *mpReader) error {
		dup = dup || seen[k]
		seen[k] = true
		return r.skip()
	})
	return err == nil && !dup
}
