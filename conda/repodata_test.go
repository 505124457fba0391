package conda

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"
)

// synthRecords returns n synthetic records in subdir spread over n/10
// names, half .conda and half .tar.bz2, with numbers as json.Number as
// they are after a storage round trip.
func synthRecords(n int, subdir string) []Record {
	recs := make([]Record, 0, n)
	for i := range n {
		name := fmt.Sprintf("pkg-%04d", i%max(n/10, 1))
		version := fmt.Sprintf("%d.%d.%d", i%7, i%13, i/100)
		build := fmt.Sprintf("py%dh%08x_%d", 38+i%4, i*2654435761%(1<<32), i%3)
		ext := ExtTarBz2
		if i%2 == 0 {
			ext = ExtConda
		}
		md5sum := fmt.Sprintf("%032x", i*7919)
		shasum := sha256.Sum256([]byte(name + version + build + ext))
		recs = append(recs, Record{
			Filename: name + "-" + version + "-" + build + ext,
			Subdir:   subdir,
			Fields: map[string]any{
				"name":           name,
				"version":        version,
				"build":          build,
				"build_number":   json.Number(fmt.Sprint(i % 3)),
				"depends":        []any{"python >=3.8", fmt.Sprintf("pkg-%04d >=1.0", (i+1)%max(n/10, 1)), "libzlib >=1.2.13,<2.0a0"},
				"constrains":     []any{},
				"license":        "BSD-3-Clause",
				"license_family": "BSD",
				"subdir":         subdir,
				"timestamp":      json.Number(fmt.Sprint(1700000000000 + int64(i)*1000)),
				"md5":            md5sum,
				"sha256":         hex.EncodeToString(shasum[:]),
				"size":           json.Number(fmt.Sprint(10000 + i)),
			},
		})
	}
	return recs
}

func shuffled(recs []Record, seed uint64) []Record {
	out := slices.Clone(recs)
	r := rand.New(rand.NewPCG(seed, seed+1))
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func zstdDecode(t testing.TB, b []byte) []byte {
	t.Helper()
	d, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out, err := d.DecodeAll(b, nil)
	if err != nil {
		t.Fatalf("zstd: %v", err)
	}
	return out
}

func TestRepodataDeterministic(t *testing.T) {
	recs := synthRecords(500, "linux-64")
	want := Repodata("linux-64", recs)
	wantCur := CurrentRepodata("linux-64", recs)
	wantIdx, wantShards, err := Shards("linux-64", recs)
	if err != nil {
		t.Fatal(err)
	}
	wantCD := ChannelData([]string{"linux-64"}, map[string][]Record{"linux-64": recs}, nil)
	for seed := range uint64(3) {
		s := shuffled(recs, seed)
		if got := Repodata("linux-64", s); !bytes.Equal(got, want) {
			t.Fatalf("Repodata differs for shuffled input")
		}
		if got := CurrentRepodata("linux-64", s); !bytes.Equal(got, wantCur) {
			t.Fatalf("CurrentRepodata differs for shuffled input")
		}
		idx, shards, err := Shards("linux-64", s)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(idx, wantIdx) || len(shards) != len(wantShards) {
			t.Fatalf("Shards index differs for shuffled input")
		}
		for k, v := range wantShards {
			if !bytes.Equal(shards[k], v) {
				t.Fatalf("shard %s differs", k)
			}
		}
		if got := ChannelData([]string{"linux-64"}, map[string][]Record{"linux-64": s}, nil); !bytes.Equal(got, wantCD) {
			t.Fatalf("ChannelData differs for shuffled input")
		}
	}

	var doc struct {
		Info struct {
			Subdir string `json:"subdir"`
		} `json:"info"`
		Packages        map[string]map[string]any `json:"packages"`
		PackagesConda   map[string]map[string]any `json:"packages.conda"`
		Removed         []string                  `json:"removed"`
		RepodataVersion int                       `json:"repodata_version"`
	}
	if err := json.Unmarshal(want, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Info.Subdir != "linux-64" || doc.RepodataVersion != 1 || doc.Removed == nil || len(doc.Removed) != 0 {
		t.Errorf("top level = %+v", doc.Info)
	}
	if len(doc.Packages) != 250 || len(doc.PackagesConda) != 250 {
		t.Errorf("counts %d %d", len(doc.Packages), len(doc.PackagesConda))
	}
	if bytes.Contains(want, []byte("base_url")) {
		t.Errorf("repodata has base_url")
	}
	if !bytes.HasSuffix(want, []byte("}\n")) {
		t.Errorf("no trailing newline")
	}
}

func TestRepodataNumbersRoundTrip(t *testing.T) {
	// A record straight from NewRecord (int64 size) and the same record
	// after a JSON storage round trip (json.Number) give the same output.
	fields := map[string]any{
		"name": "a", "version": "1", "build": "0", "build_number": 0, "size": int64(123),
		"timestamp": int64(1700000000000), "md5": strings.Repeat("a", 32), "sha256": strings.Repeat("b", 64),
		"depends": []any{}, "float": 1.5,
	}
	back, err := DecodeRecordFields(EncodeRecordFields(fields))
	if err != nil {
		t.Fatal(err)
	}
	r1 := []Record{{Filename: "a-1-0.conda", Subdir: "noarch", Fields: fields}}
	r2 := []Record{{Filename: "a-1-0.conda", Subdir: "noarch", Fields: back}}
	if !bytes.Equal(Repodata("noarch", r1), Repodata("noarch", r2)) {
		t.Errorf("repodata differs:\n%s\n%s", Repodata("noarch", r1), Repodata("noarch", r2))
	}
	i1, s1, err1 := Shards("noarch", r1)
	i2, s2, err2 := Shards("noarch", r2)
	if err1 != nil || err2 != nil || !bytes.Equal(i1, i2) || len(s1) != 1 || len(s2) != 1 {
		t.Fatalf("shards differ: %v %v", err1, err2)
	}
	for k := range s1 {
		if !bytes.Equal(s1[k], s2[k]) {
			t.Errorf("shard bytes differ")
		}
	}
}

func TestRepodataDuplicatesAndBadNames(t *testing.T) {
	a := Record{Filename: "a-1-0.conda", Fields: map[string]any{"name": "a", "size": 1}}
	b := Record{Filename: "a-1-0.conda", Fields: map[string]any{"name": "a", "size": 2}}
	bad := Record{Filename: "../x-1-0.conda", Fields: map[string]any{"name": "x"}}
	got1 := Repodata("noarch", []Record{a, b, bad})
	got2 := Repodata("noarch", []Record{b, bad, a})
	if !bytes.Equal(got1, got2) {
		t.Errorf("duplicate resolution depends on order")
	}
	if bytes.Contains(got1, []byte("x-1-0")) {
		t.Errorf("bad file name emitted")
	}
}

func TestEmptyRepodata(t *testing.T) {
	got := string(Repodata("noarch", nil))
	want := `{
  "info": {
    "subdir": "noarch"
  },
  "packages": {},
  "packages.conda": {},
  "removed": [],
  "repodata_version": 1
}
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestShards(t *testing.T) {
	recs := synthRecords(200, "linux-64")
	// A name with only a .conda record, to check "packages" is present.
	recs = append(recs, Record{Filename: "only-conda-1.0-0.conda", Subdir: "linux-64", Fields: map[string]any{
		"name": "only-conda", "version": "1.0", "build": "0", "build_number": 0,
		"md5": strings.Repeat("0", 32), "sha256": strings.Repeat("f", 64), "size": 5, "depends": []any{},
	}})
	index, shards, err := Shards("linux-64", recs)
	if err != nil {
		t.Fatal(err)
	}
	var idx map[string]any
	if err := msgpack.Unmarshal(zstdDecode(t, index), &idx); err != nil {
		t.Fatal(err)
	}
	info, _ := idx["info"].(map[string]any)
	if info["subdir"] != "linux-64" || info["base_url"] != "" || info["shards_base_url"] != "./shards/" {
		t.Errorf("info = %v", info)
	}
	if _, ok := info["created_at"]; ok {
		t.Errorf("created_at present")
	}
	if v := fmt.Sprint(idx["version"]); v != "1" {
		t.Errorf("version = %v", idx["version"])
	}
	names, _ := idx["shards"].(map[string]any)
	if len(names) != 21 || len(shards) != 21 {
		t.Fatalf("%d names, %d shards", len(names), len(shards))
	}
	byFilename := map[string]Record{}
	for _, r := range recs {
		byFilename[r.Filename] = r
	}
	total := 0
	for name, v := range names {
		digest, ok := v.([]byte)
		if !ok || len(digest) != 32 {
			t.Fatalf("shard digest for %s = %T %v", name, v, v)
		}
		comp, ok := shards[hex.EncodeToString(digest)]
		if !ok {
			t.Fatalf("no shard file for %s", name)
		}
		if sum := sha256.Sum256(comp); !bytes.Equal(sum[:], digest) {
			t.Fatalf("shard %s: digest is not sha256 of compressed bytes", name)
		}
		var shard map[string]any
		if err := msgpack.Unmarshal(zstdDecode(t, comp), &shard); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"packages", "packages.conda"} {
			if _, ok := shard[k].(map[string]any); !ok {
				t.Fatalf("shard %s: %s missing (%T)", name, k, shard[k])
			}
		}
		if removed, ok := shard["removed"].([]any); !ok || len(removed) != 0 {
			t.Errorf("shard %s: removed = %#v", name, shard["removed"])
		}
		for _, k := range []string{"packages", "packages.conda"} {
			for fn, rv := range shard[k].(map[string]any) {
				total++
				rec := rv.(map[string]any)
				want := byFilename[fn]
				if rec["name"] != name || want.Fields["name"] != name {
					t.Errorf("%s in shard %s", fn, name)
				}
				sha, ok := rec["sha256"].([]byte)
				if !ok || len(sha) != 32 || hex.EncodeToString(sha) != want.Fields["sha256"] {
					t.Errorf("%s sha256 = %#v", fn, rec["sha256"])
				}
				md5sum, ok := rec["md5"].([]byte)
				if !ok || len(md5sum) != 16 || hex.EncodeToString(md5sum) != want.Fields["md5"] {
					t.Errorf("%s md5 = %#v", fn, rec["md5"])
				}
				if fmt.Sprint(rec["size"]) != fmt.Sprint(want.Fields["size"]) ||
					fmt.Sprint(rec["build_number"]) != fmt.Sprint(want.Fields["build_number"]) {
					t.Errorf("%s size/build_number = %v/%v", fn, rec["size"], rec["build_number"])
				}
				if fmt.Sprint(rec["depends"]) != fmt.Sprint(want.Fields["depends"]) {
					t.Errorf("%s depends = %v", fn, rec["depends"])
				}
			}
		}
	}
	if total != len(recs) {
		t.Errorf("shards hold %d records, want %d", total, len(recs))
	}
	// The source records still have hex digests.
	if _, ok := recs[0].Fields["sha256"].(string); !ok {
		t.Errorf("Shards modified input records")
	}
}

func TestShardsBadDigest(t *testing.T) {
	for _, f := range []map[string]any{
		{"name": "a", "sha256": "zz"},
		{"name": "a", "sha256": strings.Repeat("a", 62)},
		{"name": "a", "md5": 12},
	} {
		_, _, err := Shards("noarch", []Record{{Filename: "a-1-0.conda", Fields: f}})
		if err == nil {
			t.Errorf("%v: no error", f)
		}
	}
}

func TestCurrentRepodata(t *testing.T) {
	mk := func(fn string, bn int) Record {
		f, err := ParseFilename(fn)
		if err != nil {
			t.Fatal(err)
		}
		return Record{Filename: fn, Subdir: "linux-64", Fields: map[string]any{
			"name": f.Name, "version": f.Version, "build": f.Build, "build_number": json.Number(fmt.Sprint(bn)),
		}}
	}
	recs := []Record{
		mk("foo-1.9-py38_0.tar.bz2", 0),
		mk("foo-1.10-py38_0.tar.bz2", 0),
		mk("foo-1.10-py38_1.tar.bz2", 1),
		mk("foo-1.10-py39_1.tar.bz2", 1),
		mk("foo-1.10-py39_1.conda", 1),
		mk("foo-1.10a1-py39_5.conda", 5),
		mk("bar-3.0-0.conda", 0),
		mk("bar-2!1.0-0.conda", 0),
		mk("baz-1.0-0.conda", 0),
		mk("baz-1.0.0-1.conda", 1),
	}
	got := CurrentRepodata("linux-64", recs)
	doc, err := ParseRepodata(got)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, r := range doc.Records() {
		kept = append(kept, r.Filename)
	}
	want := []string{
		"bar-2!1.0-0.conda",
		"baz-1.0.0-1.conda",
		"foo-1.10-py38_1.tar.bz2",
		"foo-1.10-py39_1.conda",
		"foo-1.10-py39_1.tar.bz2",
	}
	if !slices.Equal(kept, want) {
		t.Errorf("kept %v, want %v", kept, want)
	}
	if !bytes.Equal(got, CurrentRepodata("linux-64", shuffled(recs, 9))) {
		t.Errorf("not deterministic")
	}
}

func TestChannelData(t *testing.T) {
	mk := func(subdir, fn string, ts int64) Record {
		f, _ := ParseFilename(fn)
		return Record{Filename: fn, Subdir: subdir, Fields: map[string]any{
			"name": f.Name, "version": f.Version, "build": f.Build, "build_number": 0,
			"timestamp": json.Number(fmt.Sprint(ts)), "license": "MIT",
		}}
	}
	recs := map[string][]Record{
		"linux-64": {mk("linux-64", "foo-1.0-0.conda", 100), mk("linux-64", "foo-2.0-0.conda", 300)},
		"osx-64":   {mk("osx-64", "foo-2.0-0.conda", 200)},
		"noarch":   {mk("noarch", "bar-0.1-0.tar.bz2", 50)},
	}
	about := map[string]map[string]any{
		"foo-1.0-0.conda":          {"summary": "old", "run_exports": map[string]any{"weak": []any{"foo >=1.0"}}},
		"linux-64/foo-2.0-0.conda": {"summary": "Foo <b>", "home": "https://foo.example", "license": "Apache-2.0", "keywords": []any{"x"}, "run_exports": map[string]any{"strong": []any{"foo >=2.0"}}},
		"osx-64/foo-2.0-0.conda":   {"summary": "Foo osx"},
	}
	got := ChannelData([]string{"win-64"}, recs, about)
	var doc struct {
		Version  int                       `json:"channeldata_version"`
		Packages map[string]map[string]any `json:"packages"`
		Subdirs  []string                  `json:"subdirs"`
	}
	if err := json.Unmarshal(got, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Version != 1 || !slices.Equal(doc.Subdirs, []string{"linux-64", "noarch", "osx-64", "win-64"}) {
		t.Errorf("top = %d %v", doc.Version, doc.Subdirs)
	}
	foo := doc.Packages["foo"]
	// Latest is foo-2.0 in linux-64 (timestamp 300 beats osx-64's 200).
	if foo["version"] != "2.0" || foo["summary"] != "Foo <b>" || foo["home"] != "https://foo.example" ||
		foo["license"] != "Apache-2.0" || foo["timestamp"] != 300.0 {
		t.Errorf("foo = %v", foo)
	}
	if fmt.Sprint(foo["subdirs"]) != "[linux-64 osx-64]" || fmt.Sprint(foo["keywords"]) != "[x]" {
		t.Errorf("foo subdirs/keywords = %v %v", foo["subdirs"], foo["keywords"])
	}
	re, _ := foo["run_exports"].(map[string]any)
	if len(re) != 2 || re["1.0"] == nil || re["2.0"] == nil {
		t.Errorf("run_exports = %v", foo["run_exports"])
	}
	bar := doc.Packages["bar"]
	if bar["license"] != "MIT" || bar["version"] != "0.1" || bar["run_exports"] != nil {
		t.Errorf("bar = %v", bar)
	}
	if !bytes.Contains(got, []byte(`"Foo <b>"`)) {
		t.Errorf("HTML-escaped output: %s", got)
	}
	shuf := map[string][]Record{}
	for k, v := range recs {
		shuf[k] = shuffled(v, 4)
	}
	if !bytes.Equal(got, ChannelData([]string{"win-64", "linux-64"}, shuf, about)) {
		t.Errorf("not deterministic")
	}
	// Empty channel still lists noarch.
	if empty := string(ChannelData(nil, nil, nil)); !strings.Contains(empty, `"noarch"`) {
		t.Errorf("empty channeldata = %s", empty)
	}

	sums := PackageSummaries(recs, about)
	if len(sums) != 2 || sums[0].Name != "bar" || sums[1].Version != "2.0" || sums[1].Summary != "Foo <b>" {
		t.Errorf("summaries = %+v", sums)
	}
}

func TestChannelMeta(t *testing.T) {
	if ChannelMeta(&PackageInfo{}) != nil {
		t.Errorf("want nil")
	}
	info := &PackageInfo{About: map[string]any{"summary": "s"}, RunExports: map[string]any{"weak": []any{"x"}}}
	m := ChannelMeta(info)
	if m["summary"] != "s" || m["run_exports"] == nil {
		t.Errorf("meta = %v", m)
	}
	m["summary"] = "changed"
	if info.About["summary"] != "s" {
		t.Errorf("ChannelMeta shares the about map")
	}
}

func TestHTML(t *testing.T) {
	files := []FileEntry{
		{Name: "b-1-0.conda", Size: 10, SHA256: "abc"},
		{Name: "a<script>-1-0.conda", Size: 20},
		{Name: "repodata.json", Size: 30},
	}
	got := SubdirIndexHTML("chan&<x>", "linux-64", files)
	rev := slices.Clone(files)
	slices.Reverse(rev)
	if !bytes.Equal(got, SubdirIndexHTML("chan&<x>", "linux-64", rev)) {
		t.Errorf("subdir page not deterministic")
	}
	s := string(got)
	if strings.Contains(s, "<script>") || strings.Contains(s, "chan&<x>") {
		t.Errorf("unescaped: %s", s)
	}
	if !strings.Contains(s, "a&lt;script&gt;-1-0.conda") || !strings.Contains(s, `href="a%3Cscript%3E-1-0.conda"`) {
		t.Errorf("escaping: %s", s)
	}
	if strings.Index(s, "a&lt;script") > strings.Index(s, "b-1-0.conda") {
		t.Errorf("not sorted")
	}
	pkgs := []PackageSummary{{Name: "zed", Version: "1", Subdirs: []string{"osx-64", "linux-64"}}, {Name: "abc", Summary: "<i>x</i>"}}
	ch := string(ChannelIndexHTML("chan", []string{"linux-64"}, pkgs))
	if strings.Contains(ch, "<i>") || !strings.Contains(ch, `href="noarch/"`) || !strings.Contains(ch, "linux-64, osx-64") {
		t.Errorf("channel page: %s", ch)
	}
	if strings.Index(ch, ">abc<") > strings.Index(ch, ">zed<") {
		t.Errorf("packages not sorted: %s", ch)
	}
}

func TestParseRepodata(t *testing.T) {
	recs := synthRecords(100, "osx-arm64")
	b := Repodata("osx-arm64", recs)
	doc, err := ParseRepodata(b)
	if err != nil {
		t.Fatal(err)
	}
	if doc.Subdir != "osx-arm64" || doc.RepodataVersion != 1 || len(doc.Packages)+len(doc.PackagesConda) != 100 {
		t.Errorf("doc = %s %d %d %d", doc.Subdir, doc.RepodataVersion, len(doc.Packages), len(doc.PackagesConda))
	}
	// Parse then regenerate gives the same bytes.
	if again := Repodata(doc.Subdir, doc.Records()); !bytes.Equal(again, b) {
		t.Errorf("regenerated repodata differs")
	}
	// A v2 document with base_url and a minimal record.
	doc, err = ParseRepodata([]byte(`{"info":{"subdir":"noarch","base_url":"https://x/"},"repodata_version":2,
		"packages":{"a-1-0.tar.bz2":{}},"removed":["b-1-0.conda"]}`))
	if err != nil || doc.BaseURL != "https://x/" || doc.RepodataVersion != 2 || len(doc.Removed) != 1 {
		t.Errorf("v2: %+v %v", doc, err)
	}

	bad := []string{
		``,
		`[]`,
		`{"info": []}`,
		`{"info": {"subdir": "Linux/64"}}`,
		`{"info": {"subdir": 5}}`,
		`{"info": {"base_url": 5}}`,
		`{"repodata_version": "1"}`,
		`{"packages": []}`,
		`{"packages": {"a-1-0.tar.bz2": 5}}`,
		`{"packages": {"../a-1-0.tar.bz2": {}}}`,
		`{"packages": {"a-1-0.conda": {}}}`,
		`{"packages.conda": {"a-1-0.tar.bz2": {}}}`,
		`{"packages.conda": {"a-1-0.conda": {"name": "b"}}}`,
		`{"packages.conda": {"a-1-0.conda": {"version": 1}}}`,
		`{"packages.conda": {"a-1-0.conda": {"size": -1}}}`,
		`{"packages.conda": {"a-1-0.conda": {"size": 1.5}}}`,
		`{"packages.conda": {"a-1-0.conda": {"build_number": "0"}}}`,
		`{"packages.conda": {"a-1-0.conda": {"md5": "xyz"}}}`,
		`{"packages.conda": {"a-1-0.conda": {"sha256": "` + strings.Repeat("g", 64) + `"}}}`,
		`{"packages.conda": {"a-1-0.conda": {"depends": "python"}}}`,
		`{"packages.conda": {"a-1-0.conda": {"constrains": [1]}}}`,
		`{"packages.conda": {"a-1-0.conda": {"subdir": "../x"}}}`,
		`{"removed": "x"}`,
		`{} {}`,
	}
	for _, in := range bad {
		if _, err := ParseRepodata([]byte(in)); !errors.Is(err, ErrBadRepodata) {
			t.Errorf("ParseRepodata(%s) err = %v, want ErrBadRepodata", in, err)
		}
	}
}

func TestCompression(t *testing.T) {
	in := Repodata("noarch", synthRecords(300, "noarch"))
	z := Zstd(in)
	if !bytes.Equal(z, Zstd(in)) {
		t.Errorf("Zstd not deterministic")
	}
	if !bytes.Equal(zstdDecode(t, z), in) {
		t.Errorf("Zstd round trip")
	}
	bz := Bzip2(in)
	if !bytes.Equal(bz, Bzip2(in)) {
		t.Errorf("Bzip2 not deterministic")
	}
	var out bytes.Buffer
	if _, err := out.ReadFrom(bzip2.NewReader(bytes.NewReader(bz))); err != nil || !bytes.Equal(out.Bytes(), in) {
		t.Errorf("Bzip2 round trip: %v", err)
	}
	gz := Gzip(in)
	if !bytes.Equal(gz, Gzip(in)) {
		t.Errorf("Gzip not deterministic")
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() || zr.OS != 255 {
		t.Errorf("gzip header carries name %q, time %v, OS %d", zr.Name, zr.ModTime, zr.OS)
	}
	out.Reset()
	if _, err := out.ReadFrom(zr); err != nil || !bytes.Equal(out.Bytes(), in) {
		t.Errorf("Gzip round trip: %v", err)
	}
	if len(z) >= len(in)/4 || len(bz) >= len(in)/4 || len(gz) >= len(in)/4 {
		t.Errorf("poor compression: %d -> zst %d, bz2 %d, gz %d", len(in), len(z), len(bz), len(gz))
	}
}

// TestZstdEncoderReuse: a recycled encoder gives the bytes of a new one,
// whatever it compressed before, and the frames decode to the input.
func TestZstdEncoderReuse(t *testing.T) {
	small := Repodata("noarch", synthRecords(20, "noarch"))
	big := Repodata("linux-64", synthRecords(3000, "linux-64"))
	fresh := newZstdEncoder()
	defer fresh.Close()
	want := fresh.EncodeAll(small, nil)
	for range 3 {
		_ = Zstd(big)
		if got := Zstd(small); !bytes.Equal(got, want) {
			t.Fatal("a recycled encoder gave other bytes than a new one")
		}
	}
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	if out, err := dec.DecodeAll(Zstd(big), nil); err != nil || !bytes.Equal(out, big) {
		t.Fatalf("round trip: %v", err)
	}
}

// TestScanRepodataReaderBounds: the streaming scan refuses a value larger
// than its bound with ErrBadRepodata, and hands back a read error as is.
func TestScanRepodataReaderBounds(t *testing.T) {
	big := []byte(`{"packages":{"a-1-0.tar.bz2":{"depends":["` + strings.Repeat("x", 4096) + `"]}}}`)
	if _, err := ScanRepodataReader(bytes.NewReader(big), ScanOptions{MaxValue: 1024}, func(Record) error { return nil }); !errors.Is(err, ErrBadRepodata) {
		t.Fatalf("oversized record: %v", err)
	}
	n := 0
	if _, err := ScanRepodataReader(bytes.NewReader(big), ScanOptions{}, func(Record) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("within the default bound: %d records, %v", n, err)
	}
	boom := errors.New("boom")
	r := io.MultiReader(bytes.NewReader(big[:100]), iotest.ErrReader(boom))
	if _, err := ScanRepodataReader(r, ScanOptions{}, func(Record) error { return nil }); !errors.Is(err, boom) || errors.Is(err, ErrBadRepodata) {
		t.Fatalf("read error: %v", err)
	}
}

// TestShardEntries: every record of a subdir is found in its name's shard
// with its sha256 and size; a file of another name is not.
func TestShardEntries(t *testing.T) {
	recs := synthRecords(200, "linux-64")
	_, shards, err := Shards("linux-64", recs)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string][]byte{}
	for _, sh := range shards {
		raw, err := unzstd(sh)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Packages      map[string]map[string]any `msgpack:"packages"`
			PackagesConda map[string]map[string]any `msgpack:"packages.conda"`
		}
		if err := msgpack.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		for _, m := range []map[string]map[string]any{doc.Packages, doc.PackagesConda} {
			for _, f := range m {
				byName[f["name"].(string)] = sh
			}
		}
	}
	for _, r := range recs {
		entries, err := ShardEntries(byName[r.Name()])
		e, ok := entries[r.Filename]
		if err != nil || !ok {
			t.Fatalf("%s: %v %v", r.Filename, ok, err)
		}
		size, _ := asInt64(r.Fields["size"])
		if hex.EncodeToString(e.SHA256) != r.Fields["sha256"] || e.Size != size {
			t.Fatalf("%s: %x %d", r.Filename, e.SHA256, e.Size)
		}
		other := recs[0]
		if other.Name() != r.Name() {
			if _, ok := entries[other.Filename]; ok {
				t.Fatalf("%s found in the shard of %s", other.Filename, r.Name())
			}
		}
	}
	if _, err := ShardEntries([]byte("not zstd")); err == nil {
		t.Fatal("garbage shard accepted")
	}
	// One file alone (ShardEntryOf), as the whole map says.
	for _, r := range recs {
		want, _ := ShardEntries(byName[r.Name()])
		e, ok, err := ShardEntryOf(byName[r.Name()], r.Filename)
		if err != nil || !ok || !bytes.Equal(e.SHA256, want[r.Filename].SHA256) || e.Size != want[r.Filename].Size {
			t.Fatalf("ShardEntryOf(%s): %+v %v %v", r.Filename, e, ok, err)
		}
		if _, ok, err := ShardEntryOf(byName[r.Name()], r.Filename+"x"); ok || err != nil {
			t.Fatalf("ShardEntryOf of an absent file: %v %v", ok, err)
		}
	}
	// One entry alone says the same.
	for _, r := range recs[:20] {
		pair, err := AppendShardPair(nil, r)
		if err != nil {
			t.Fatal(err)
		}
		fn, e, err := ShardPairEntry(pair)
		size, _ := asInt64(r.Fields["size"])
		if err != nil || fn != r.Filename || hex.EncodeToString(e.SHA256) != r.Fields["sha256"] || e.Size != size {
			t.Fatalf("%s: ShardPairEntry %s %x %d %v", r.Filename, fn, e.SHA256, e.Size, err)
		}
	}
	for _, bad := range [][]byte{nil, {0xc0}, {0xa1, 'a', 0xc1}} {
		if _, _, err := ShardPairEntry(bad); err == nil {
			t.Fatalf("ShardPairEntry(%x) accepted", bad)
		}
	}
}

// TestLatestMatchesCurrentRepodata: fed record by record (in any order),
// Latest gives the bytes CurrentRepodata gives for the whole list.
func TestLatestMatchesCurrentRepodata(t *testing.T) {
	recs := synthRecords(500, "linux-64")
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range recs { // ties on version and build number, other builds
		if rng.IntN(3) == 0 {
			f := map[string]any{}
			for k, v := range recs[i].Fields {
				f[k] = v
			}
			f["build_number"] = json.Number(fmt.Sprint(rng.IntN(3)))
			recs[i].Fields = f
		}
	}
	want := CurrentRepodata("linux-64", recs)
	for range 3 {
		rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
		var l Latest
		for _, r := range recs {
			l.Add(r)
		}
		if got := l.CurrentRepodata("linux-64"); !bytes.Equal(got, want) {
			t.Fatalf("Latest differs from CurrentRepodata (%d vs %d bytes)", len(got), len(want))
		}
	}
}

// TestShardIndexDigests: an index as Shards makes it maps each name to the
// SHA-256 of the shard file that has its records; garbage is an error.
func TestShardIndexDigests(t *testing.T) {
	recs := synthRecords(200, "linux-64")
	index, shards, err := Shards("linux-64", recs)
	if err != nil {
		t.Fatal(err)
	}
	got, base, err := ShardIndexDigests(index)
	if err != nil || base != "./shards/" {
		t.Fatalf("%v, shards base %q", err, base)
	}
	names := map[string]bool{}
	for _, r := range recs {
		names[r.Name()] = true
		sum, ok := got[r.Name()]
		if !ok {
			t.Fatalf("%s: not in the index", r.Name())
		}
		sh := shards[hex.EncodeToString(sum[:])]
		if sha256.Sum256(sh) != sum {
			t.Fatalf("%s: no shard file with the index's digest", r.Name())
		}
		entries, err := ShardEntries(sh)
		if _, ok := entries[r.Filename]; err != nil || !ok {
			t.Fatalf("%s: not in its name's shard (%v)", r.Filename, err)
		}
	}
	if len(got) != len(names) {
		t.Fatalf("%d names in the index, want %d", len(got), len(names))
	}
	// Where conda-index puts its shards (beside the index), an info the
	// reference would pass over, none.
	for _, tc := range []struct {
		raw  []byte
		base string
	}{
		{[]byte{0x81, 0xa4, 'i', 'n', 'f', 'o', 0x81, 0xaf, 's', 'h', 'a', 'r', 'd', 's', '_', 'b', 'a', 's', 'e', '_', 'u', 'r', 'l', 0xa0}, ""},
		{[]byte{0x81, 0xa4, 'i', 'n', 'f', 'o', 0x81, 0xaf, 's', 'h', 'a', 'r', 'd', 's', '_', 'b', 'a', 's', 'e', '_', 'u', 'r', 'l', 0xa2, '.', '/'}, "./"},
		{[]byte{0x81, 0xa4, 'i', 'n', 'f', 'o', 0x92, 0x01, 0x02}, ""},
		{[]byte{0x80}, ""},
	} {
		if _, base, err := ShardIndexDigests(AppendZstd(nil, tc.raw)); err != nil || base != tc.base {
			t.Errorf("%x: shards base %q (%v), want %q", tc.raw, base, err, tc.base)
		}
	}
	if _, _, err := ShardIndexDigestsMax(index, len(index)); err == nil {
		t.Error("an index decoding past the limit accepted")
	}
	for _, bad := range [][]byte{[]byte("not zstd"), AppendZstd(nil, []byte{0xc1})} {
		if _, _, err := ShardIndexDigests(bad); err == nil {
			t.Errorf("garbage index %q accepted", bad)
		}
	}
}

// TestUpstreamShardsReadWithinWhatTheyHold: headers claiming far more than
// a document holds (a 1 GB key, maps of 4 billion entries, a deep nest)
// are refused without allocating for the claim. vmihailenco's Unmarshal,
// which read these before, allocated 56 MB for the first 7 bytes.
func TestUpstreamShardsReadWithinWhatTheyHold(t *testing.T) {
	deep := append(bytes.Repeat([]byte{0x91}, 100000), 0xc0)
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"1 GB key", []byte{0x81, 0xc6, 0x3c, 0x9c, 0xb9, 0x21, 0x7a}},
		{"4 billion members", []byte{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'a'}},
		{"4 billion shards", append([]byte{0x81, 0xa6, 's', 'h', 'a', 'r', 'd', 's', 0xdf, 0xff, 0xff, 0xff, 0xff}, bytes.Repeat([]byte{0xa1, 'a', 0xa1, 'b'}, 100)...)},
		{"4 billion packages", append([]byte{0x81, 0xa8, 'p', 'a', 'c', 'k', 'a', 'g', 'e', 's', 0xdf, 0xff, 0xff, 0xff, 0xff}, bytes.Repeat([]byte{0xa1, 'a', 0x80}, 100)...)},
		{"a record of 4 billion fields", []byte{0x81, 0xa8, 'p', 'a', 'c', 'k', 'a', 'g', 'e', 's', 0x81, 0xa1, 'a', 0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0}},
		{"nested 100,000 deep", append([]byte{0x81, 0xa1, 'x'}, deep...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := AppendZstd(nil, tc.raw)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			_, _, ierr := ShardIndexDigests(b)
			_, serr := ShardEntries(b)
			runtime.ReadMemStats(&ms)
			// The decompressed document (raw) twice, and small change.
			if got, limit := ms.TotalAlloc-before, uint64(2*len(tc.raw)+1<<20); got > limit {
				t.Fatalf("allocated %d bytes for a %d-byte document (limit %d)", got, len(tc.raw), limit)
			}
			if tc.name != "nested 100,000 deep" && (ierr == nil || serr == nil) {
				t.Fatalf("accepted: index %v, shard %v", ierr, serr)
			}
		})
	}
}
