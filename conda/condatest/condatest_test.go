package condatest

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/bzip2"
	"encoding/json"
	"io"
	"slices"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func spec() Spec {
	return Spec{
		Name: "demo", Version: "1.0", Build: "h0_0", Subdir: "osx-arm64",
		Files: map[string]string{"b/file": "b", "a/file": "a"},
	}
}

func tarNames(t *testing.T, r io.Reader) ([]string, map[string][]byte) {
	t.Helper()
	tr := tar.NewReader(r)
	var names []string
	contents := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, contents
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		contents[h.Name], _ = io.ReadAll(tr)
	}
}

func TestTarBz2(t *testing.T) {
	s := WithEscapingMember(spec())
	b := TarBz2(t, s)
	if !bytes.Equal(b, TarBz2(t, s)) {
		t.Error("not deterministic")
	}
	names, contents := tarNames(t, bzip2.NewReader(bytes.NewReader(b)))
	want := []string{"../evil", "a/file", "b/file", "info/about.json", "info/files", "info/index.json", "info/paths.json"}
	if !slices.Equal(names, want) {
		t.Errorf("members = %v, want %v", names, want)
	}
	var idx map[string]any
	if err := json.Unmarshal(contents["info/index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if idx["arch"] != "arm64" || idx["platform"] != "osx" || idx["license"] != "MIT" || idx["timestamp"] != float64(DefaultTimestamp) {
		t.Errorf("index = %v", idx)
	}
	if string(contents["info/files"]) != "a/file\nb/file\n" {
		t.Errorf("files = %q", contents["info/files"])
	}
}

func TestConda(t *testing.T) {
	s := spec()
	b := Conda(t, s)
	if !bytes.Equal(b, Conda(t, s)) {
		t.Error("not deterministic")
	}
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if f.Method != zip.Store || f.Flags&0x8 != 0 {
			t.Errorf("%s: method %d flags %#x; want stored without data descriptor", f.Name, f.Method, f.Flags)
		}
	}
	want := []string{"metadata.json", "pkg-demo-1.0-h0_0.tar.zst", "info-demo-1.0-h0_0.tar.zst"}
	if !slices.Equal(names, want) {
		t.Errorf("entries = %v", names)
	}
	rc, _ := zr.File[2].Open()
	defer rc.Close()
	zd, err := zstd.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	defer zd.Close()
	info, _ := tarNames(t, zd)
	if !slices.Contains(info, "info/index.json") || slices.Contains(info, "a/file") {
		t.Errorf("info members = %v", info)
	}
}

func TestIndex(t *testing.T) {
	cases := map[string][2]any{
		"linux-64":          {"x86_64", "linux"},
		"win-32":            {"x86", "win"},
		"linux-aarch64":     {"aarch64", "linux"},
		"emscripten-wasm32": {"wasm32", "emscripten"},
		"noarch":            {nil, nil},
		"":                  {nil, nil},
	}
	for subdir, want := range cases {
		s := spec()
		s.Subdir = subdir
		idx := Index(s)
		if idx["arch"] != want[0] || idx["platform"] != want[1] {
			t.Errorf("%q: arch %v platform %v", subdir, idx["arch"], idx["platform"])
		}
	}
	s := spec()
	o := WithIndexOverride(s, map[string]any{"name": "other", "license": nil})
	if s.IndexOverride != nil {
		t.Error("WithIndexOverride mutated its argument")
	}
	idx := Index(o)
	if _, ok := idx["license"]; ok || idx["name"] != "other" {
		t.Errorf("override: %v", idx)
	}
	if Filename(s, ".conda") != "demo-1.0-h0_0.conda" {
		t.Error(Filename(s, ".conda"))
	}
}
