package forgegen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/conda"
)

func newChannel(t *testing.T, cfg Config) *Channel {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func repodata(t *testing.T, c *Channel, subdir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	st, err := c.WriteRepodata(context.Background(), &buf, subdir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != c.Len(subdir) || st.Bytes != int64(buf.Len()) {
		t.Fatalf("stats %+v, want %d records, %d bytes", st, c.Len(subdir), buf.Len())
	}
	return buf.Bytes()
}

// TestDeterministic: the same config gives the same bytes; another seed,
// other bytes.
func TestDeterministic(t *testing.T) {
	cfg := Config{Seed: 7, Records: 3000, NoarchRecords: 600, Subdirs: []string{"linux-64", "osx-arm64"}}
	other := cfg
	other.Seed = 8
	for _, sd := range []string{"linux-64", "osx-arm64", "noarch"} {
		a := repodata(t, newChannel(t, cfg), sd)
		b := repodata(t, newChannel(t, cfg), sd)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two runs of one config differ", sd)
		}
		if bytes.Equal(a, repodata(t, newChannel(t, other), sd)) {
			t.Errorf("%s: seeds 7 and 8 gave the same bytes", sd)
		}
	}
}

// TestShape parses the output with the repository's conda parser and
// checks what makes it conda-forge-like.
func TestShape(t *testing.T) {
	c := newChannel(t, Config{Seed: 1, Records: 20000, NoarchRecords: 4000})
	names := map[string]bool{}
	for _, sd := range c.Subdirs() {
		for _, n := range c.Names(sd) {
			names[n] = true
		}
	}
	if len(names) != 1200 {
		t.Fatalf("%d names, want 1200 (one per 20 records)", len(names))
	}
	for _, sd := range c.Subdirs() {
		t.Run(sd, func(t *testing.T) {
			raw := repodata(t, c, sd)
			var order []string
			doc, err := conda.ScanRepodata(raw, func(r conda.Record) error {
				order = append(order, r.Filename)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if doc.Subdir != sd || doc.RepodataVersion != 1 {
				t.Fatalf("info.subdir %q, repodata_version %d", doc.Subdir, doc.RepodataVersion)
			}
			full, err := conda.ParseRepodata(raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(full.Packages) == 0 || len(full.PackagesConda) == 0 {
				t.Fatalf("packages %d, packages.conda %d: want both", len(full.Packages), len(full.PackagesConda))
			}
			if len(full.Packages)+len(full.PackagesConda) != c.Len(sd) {
				t.Fatalf("%d records, want %d", len(full.Packages)+len(full.PackagesConda), c.Len(sd))
			}
			// Each section is sorted, as conda-index writes it.
			nb := len(full.Packages)
			if !slices.IsSorted(order[:nb]) || !slices.IsSorted(order[nb:]) {
				t.Error("sections not sorted by file name")
			}
			perName := map[string]int{}
			for _, r := range full.Records() {
				f := r.Fields
				for _, k := range []string{"build", "build_number", "depends", "license", "md5", "name", "sha256", "size", "subdir", "timestamp", "version"} {
					if _, ok := f[k]; !ok {
						t.Fatalf("%s: no %s", r.Filename, k)
					}
				}
				if f["subdir"] != sd {
					t.Fatalf("%s: subdir %v", r.Filename, f["subdir"])
				}
				if _, ok := f["noarch"]; ok != (sd == Noarch) {
					t.Fatalf("%s: noarch %v in %s", r.Filename, f["noarch"], sd)
				}
				for _, k := range []string{"depends", "constrains"} {
					list, _ := f[k].([]any)
					for _, d := range list {
						name, _, _ := strings.Cut(d.(string), " ")
						if !names[name] {
							t.Fatalf("%s: %s names %q, which is not in the channel", r.Filename, k, name)
						}
					}
				}
				perName[r.Name()]++
			}
			counts := slices.Sorted(func(yield func(int) bool) {
				for _, n := range perName {
					if !yield(n) {
						return
					}
				}
			})
			if median, top := counts[len(counts)/2], counts[len(counts)-1]; sd != Noarch && (median > 10 || top < 100) {
				t.Errorf("records per name: median %d, max %d; want many names with few builds and some with hundreds", median, top)
			}
		})
	}
}

// TestBuildStrings: the kinds' build strings look like conda-forge's, and
// the structural pins have matching records.
func TestBuildStrings(t *testing.T) {
	c := newChannel(t, Config{Seed: 3, Records: 20000, NoarchRecords: 4000})
	pattern := regexp.MustCompile(`^(py3\d+h[0-9a-f]{7}_\d+|h[0-9a-f]{7}_\d+|r4\dh[0-9a-f]{7}_\d+|r4\dhc72bb7e_\d+|pyhd8ed1ab_\d+|\d+_cp3\d+)$`)
	seen := map[string]bool{}
	for _, sd := range c.Subdirs() {
		err := c.Each(sd, func(r Record) error {
			if !pattern.MatchString(r.Build) {
				t.Fatalf("%s: build %q", r.Filename, r.Build)
			}
			seen[r.Name+" "+r.Version+" "+r.Build] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, py := range pythons {
		v := "3." + strconv.Itoa(py)
		if !seen["python_abi "+v+" 4_cp3"+strconv.Itoa(py)] || !seen["python "+v+".0 "+pythonBuild(t, c, v+".0")] {
			t.Errorf("no python/python_abi %s records", v)
		}
	}
}

// pythonBuild returns the build of python's record of version v.
func pythonBuild(t *testing.T, c *Channel, v string) string {
	t.Helper()
	recs, err := c.NameRecords("linux-64", "python")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Version == v {
			return r.Build
		}
	}
	return "(none)"
}

// TestStringsNeedNoEscape: every generated string is printable ASCII
// without quotes or backslashes, which the writer relies on.
func TestStringsNeedNoEscape(t *testing.T) {
	c := newChannel(t, Config{Seed: 5, Records: 5000, NoarchRecords: 1000})
	ok := regexp.MustCompile(`^[ !#-\[\]-~]*$`)
	for _, sd := range c.Subdirs() {
		err := c.Each(sd, func(r Record) error {
			for _, s := range append([]string{r.Filename, r.Name, r.Version, r.Build, r.License, r.LicenseFamily, r.MD5, r.SHA256, r.Subdir, r.Noarch}, append(r.Depends, r.Constrains...)...) {
				if !ok.MatchString(s) {
					t.Fatalf("%s: %q needs escaping", r.Filename, s)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestChange: the changed variant differs from the original in exactly
// record k (name order), in its digests, size and timestamp.
func TestChange(t *testing.T) {
	cfg := Config{Seed: 2, Records: 4000, NoarchRecords: 800}
	const k = 1234
	changed := cfg
	changed.Change = &Change{Subdir: "linux-64", Index: k}
	a, b := newChannel(t, cfg), newChannel(t, changed)
	want, err := a.Record("linux-64", k)
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Record("linux-64", k)
	if err != nil {
		t.Fatal(err)
	}
	if got.Filename != want.Filename || got.SHA256 == want.SHA256 || got.MD5 == want.MD5 || got.Size == want.Size {
		t.Fatalf("record %d: %+v, was %+v", k, got, want)
	}
	before, err := conda.ParseRepodata(repodata(t, a, "linux-64"))
	if err != nil {
		t.Fatal(err)
	}
	after, err := conda.ParseRepodata(repodata(t, b, "linux-64"))
	if err != nil {
		t.Fatal(err)
	}
	var differ []string
	afterRecs := after.Records()
	for i, r := range before.Records() {
		if !equalFields(r.Fields, afterRecs[i].Fields) {
			differ = append(differ, r.Filename)
		}
	}
	if !slices.Equal(differ, []string{want.Filename}) {
		t.Fatalf("records that differ: %v, want [%s]", differ, want.Filename)
	}
	if !bytes.Equal(repodata(t, a, Noarch), repodata(t, b, Noarch)) {
		t.Fatal("a change in linux-64 changed noarch")
	}
}

func equalFields(a, b map[string]any) bool {
	return bytes.Equal(conda.EncodeRecordFields(a), conda.EncodeRecordFields(b))
}

// TestRealPackages: the records of the names of Config.Real are real
// package files, written beside repodata.json, that the repository's
// package reader accepts, whose sha256 and size are the records', and
// that conda-package-handling extracts.
func TestRealPackages(t *testing.T) {
	probe := newChannel(t, Config{Seed: 4, Records: 2000, NoarchRecords: 400})
	var real []string
	for _, sd := range probe.Subdirs() {
		names := probe.Names(sd)
		real = append(real, names[len(names)/2])
	}
	c := newChannel(t, Config{Seed: 4, Records: 2000, NoarchRecords: 400, Real: real})
	dir := t.TempDir()
	stats, err := c.WriteDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	files := 0
	for _, st := range stats {
		files += st.Packages
		raw, err := os.ReadFile(filepath.Join(dir, st.Subdir, "repodata.json"))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := conda.ParseRepodata(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range doc.Records() {
			if !slices.Contains(real, r.Name()) {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, st.Subdir, r.Filename))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != r.Fields["sha256"] || r.Fields["size"].(interface{ String() string }).String() != strconv.Itoa(len(b)) {
				t.Fatalf("%s: record sha256/size do not match the file", r.Filename)
			}
			info, err := conda.VerifyPackage(bytes.NewReader(b), int64(len(b)), r.Filename, conda.VerifyOptions{})
			if err != nil {
				t.Fatalf("%s: %v", r.Filename, err)
			}
			if info.Index["name"] != r.Name() || info.Index["subdir"] != st.Subdir {
				t.Fatalf("%s: index.json %v", r.Filename, info.Index)
			}
		}
	}
	if files == 0 || files != len(mustRecords(t, c, "linux-64", real[0]))+len(mustRecords(t, c, Noarch, real[1])) {
		t.Fatalf("%d package files written", files)
	}
	// conda-package-handling extracts one of each format.
	cph, err := exec.LookPath("cph")
	if err != nil {
		t.Fatalf("cph not installed (apt-get install conda-package-handling): %v", err)
	}
	for _, ext := range []string{conda.ExtConda, conda.ExtTarBz2} {
		var fn string
		for _, r := range mustRecords(t, c, "linux-64", real[0]) {
			if strings.HasSuffix(r.Filename, ext) {
				fn = r.Filename
			}
		}
		if fn == "" {
			continue
		}
		cmd := exec.Command(cph, "x", fn, "--dest", "out-"+ext)
		cmd.Dir = filepath.Join(dir, "linux-64")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cph x %s: %v\n%s", fn, err, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "linux-64", "out-"+ext, "info", "index.json")); err != nil {
			t.Fatal(err)
		}
	}
}

func mustRecords(t *testing.T, c *Channel, sd, name string) []Record {
	t.Helper()
	recs, err := c.NameRecords(sd, name)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestBadConfig: configurations that cannot be generated are refused
// with ErrConfig.
func TestBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no records":         {Records: 0},
		"noarch subdir":      {Records: 10, Subdirs: []string{"noarch"}},
		"bad subdir":         {Records: 10, Subdirs: []string{"Linux 64"}},
		"more names":         {Records: 10, Names: 11},
		"unknown real name":  {Records: 100, Real: []string{"no-such-name"}},
		"change off the end": {Records: 100, Change: &Change{Subdir: "linux-64", Index: 100}},
		"change bad subdir":  {Records: 100, Change: &Change{Subdir: "win-64", Index: 0}},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

// TestChannelData: channeldata.json is JSON listing every name with its
// subdirs, and the channel's subdirs.
func TestChannelData(t *testing.T) {
	c := newChannel(t, Config{Seed: 6, Records: 2000, NoarchRecords: 400, Subdirs: []string{"linux-64", "osx-arm64"}})
	var buf bytes.Buffer
	if err := c.WriteChannelData(&buf); err != nil {
		t.Fatal(err)
	}
	var cd struct {
		Packages map[string]struct {
			Subdirs []string `json:"subdirs"`
			Version string   `json:"version"`
		} `json:"packages"`
		Subdirs []string `json:"subdirs"`
	}
	if err := json.Unmarshal(buf.Bytes(), &cd); err != nil {
		t.Fatalf("%v:\n%s", err, buf.Bytes())
	}
	if !slices.Equal(cd.Subdirs, []string{"linux-64", "noarch", "osx-arm64"}) {
		t.Errorf("subdirs %v", cd.Subdirs)
	}
	for _, sd := range c.Subdirs() {
		for _, n := range c.Names(sd) {
			if p, ok := cd.Packages[n]; !ok || !slices.Contains(p.Subdirs, sd) || p.Version == "" {
				t.Fatalf("%s: %+v", n, p)
			}
		}
	}
	if len(cd.Packages) != len(c.Names("linux-64"))+len(c.Names(Noarch)) {
		t.Errorf("%d packages", len(cd.Packages))
	}
}
