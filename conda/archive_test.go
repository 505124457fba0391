package conda

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
)

func testSpec() condatest.Spec {
	return condatest.Spec{
		Name:        "demo-pkg",
		Version:     "1.2.3",
		Build:       "py_0",
		Subdir:      "linux-64",
		BuildNumber: 0,
		Depends:     []string{"python >=3.8", "zlib"},
		Files:       map[string]string{"lib/demo.txt": "hello\n", "bin/demo": "#!/bin/sh\necho demo\n"},
		About:       map[string]any{"summary": "A demo", "description": "Longer text"},
		RunExports:  map[string]any{"weak": []any{"demo-pkg >=1.2"}},
	}
}

// build returns the archive for s with the given extension.
func build(t testing.TB, s condatest.Spec, ext string) []byte {
	t.Helper()
	if ext == ExtConda {
		return condatest.Conda(t, s)
	}
	return condatest.TarBz2(t, s)
}

func readPkg(b []byte, fn string) (*PackageInfo, error) {
	return ReadPackage(bytes.NewReader(b), int64(len(b)), fn)
}

func TestReadPackage(t *testing.T) {
	for _, ext := range []string{ExtTarBz2, ExtConda} {
		t.Run(ext, func(t *testing.T) {
			s := testSpec()
			b := build(t, s, ext)
			fn := condatest.Filename(s, ext)
			info, err := readPkg(b, fn)
			if err != nil {
				t.Fatal(err)
			}
			if info.Filename.String() != fn {
				t.Errorf("Filename = %v", info.Filename)
			}
			if info.Index["name"] != "demo-pkg" || info.Index["subdir"] != "linux-64" {
				t.Errorf("Index = %v", info.Index)
			}
			if n, ok := info.Index["build_number"].(json.Number); !ok || n != "0" {
				t.Errorf("build_number = %#v, want json.Number 0", info.Index["build_number"])
			}
			if info.Index["arch"] != "x86_64" || info.Index["platform"] != "linux" {
				t.Errorf("arch/platform = %v/%v", info.Index["arch"], info.Index["platform"])
			}
			if !bytes.Contains(info.IndexJSON, []byte(`"demo-pkg"`)) {
				t.Errorf("IndexJSON = %s", info.IndexJSON)
			}
			if info.About["summary"] != "A demo" {
				t.Errorf("About = %v", info.About)
			}
			if info.RunExports == nil {
				t.Errorf("RunExports missing")
			}
			// Deterministic builds.
			if !bytes.Equal(b, build(t, s, ext)) {
				t.Errorf("condatest output not deterministic")
			}
		})
	}
}

func TestReadPackageOptionalFiles(t *testing.T) {
	for _, ext := range []string{ExtTarBz2, ExtConda} {
		s := testSpec()
		s.RunExports = nil
		s.Subdir = ""
		s.Noarch = "python"
		info, err := readPkg(build(t, s, ext), condatest.Filename(s, ext))
		if err != nil {
			t.Fatalf("%s: %v", ext, err)
		}
		if info.RunExports != nil {
			t.Errorf("%s: RunExports = %v, want nil", ext, info.RunExports)
		}
		if info.Index["subdir"] != "noarch" || info.Index["noarch"] != "python" {
			t.Errorf("%s: index = %v", ext, info.Index)
		}
	}
}

func TestReadPackageNotBzip2(t *testing.T) {
	_, err := readPkg([]byte("dfdf"), "x-1-0.tar.bz2")
	if !errors.Is(err, ErrBadArchive) {
		t.Fatalf("err = %v, want ErrBadArchive", err)
	}
	if want := "conda: bad archive x-1-0.tar.bz2: not a bzip2 file"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	// Valid magic but garbage after it.
	_, err = readPkg([]byte("BZh91AY&SYgarbage"), "x-1-0.tar.bz2")
	if !errors.Is(err, ErrBadArchive) {
		t.Errorf("garbage bzip2: err = %v", err)
	}
	_, err = readPkg([]byte("dfdf"), "x-1-0.conda")
	if !errors.Is(err, ErrBadArchive) || !strings.Contains(err.Error(), "not a zip file") {
		t.Errorf("not zip: err = %v", err)
	}
	_, err = readPkg(nil, "x-1-0.tar.bz2")
	if !errors.Is(err, ErrBadArchive) {
		t.Errorf("empty: err = %v", err)
	}
}

func TestReadPackageBadFilename(t *testing.T) {
	s := testSpec()
	_, err := readPkg(condatest.Conda(t, s), "../evil-1-0.conda")
	if !errors.Is(err, ErrBadFilename) {
		t.Errorf("err = %v", err)
	}
}

func TestReadPackageTruncated(t *testing.T) {
	for _, ext := range []string{ExtTarBz2, ExtConda} {
		s := testSpec()
		// Without run_exports.json the .tar.bz2 reader walks to the end,
		// so truncation anywhere is seen.
		s.RunExports = nil
		// A large incompressible payload so truncation hits data.
		rnd := rand.New(rand.NewPCG(1, 2))
		big := make([]byte, 64<<10)
		for i := range big {
			big[i] = byte(rnd.Uint32())
		}
		s.Files["share/big.bin"] = string(big)
		b := build(t, s, ext)
		fn := condatest.Filename(s, ext)
		for _, n := range []int{len(b) / 4, len(b) / 2, len(b) - 10, len(b) - 1} {
			_, err := readPkg(b[:n], fn)
			if !errors.Is(err, ErrBadArchive) {
				t.Errorf("%s truncated to %d/%d: err = %v, want ErrBadArchive", ext, n, len(b), err)
			}
		}
	}
}

func TestReadPackageUnsafe(t *testing.T) {
	members := []condatest.Member{
		{Name: "../evil"},
		{Name: "info/../../evil"},
		{Name: "/etc/passwd"},
		{Name: `..\evil`},
		{Name: `C:\evil`},
		{Name: "lib/link", Type: tar.TypeSymlink, Linkname: "../../etc/passwd"},
		{Name: "link", Type: tar.TypeSymlink, Linkname: "/etc/passwd"},
		{Name: "link", Type: tar.TypeSymlink, Linkname: ".."},
		{Name: "hard", Type: tar.TypeLink, Linkname: "../outside"},
		{Name: "hard", Type: tar.TypeLink, Linkname: "/etc/shadow"},
		{Name: "dev/null", Type: tar.TypeChar},
	}
	for _, ext := range []string{ExtTarBz2, ExtConda} {
		for _, m := range members {
			s := condatest.WithMember(testSpec(), m)
			_, err := readPkg(build(t, s, ext), condatest.Filename(s, ext))
			if !errors.Is(err, ErrUnsafeArchive) {
				t.Errorf("%s member %+v: err = %v, want ErrUnsafeArchive", ext, m, err)
			}
		}
		s := condatest.WithEscapingMember(testSpec())
		if _, err := readPkg(build(t, s, ext), condatest.Filename(s, ext)); !errors.Is(err, ErrUnsafeArchive) {
			t.Errorf("%s WithEscapingMember: err = %v", ext, err)
		}
	}
}

func TestReadPackageSafeLinks(t *testing.T) {
	members := []condatest.Member{
		{Name: "lib/libz.so", Type: tar.TypeSymlink, Linkname: "libz.so.1"},
		{Name: "lib/a/b", Type: tar.TypeSymlink, Linkname: "../../bin/x"},
		{Name: "./lib/c", Type: tar.TypeSymlink, Linkname: "./d"},
		{Name: "bin/hard", Type: tar.TypeLink, Linkname: "bin/demo"},
		{Name: "share/dir/", Type: tar.TypeDir},
	}
	for _, ext := range []string{ExtTarBz2, ExtConda} {
		s := testSpec()
		for _, m := range members {
			s = condatest.WithMember(s, m)
		}
		if _, err := readPkg(build(t, s, ext), condatest.Filename(s, ext)); err != nil {
			t.Errorf("%s: %v", ext, err)
		}
	}
}

func TestReadPackageMissingIndex(t *testing.T) {
	for _, ext := range []string{ExtTarBz2, ExtConda} {
		s := testSpec()
		s.OmitIndex = true
		_, err := readPkg(build(t, s, ext), condatest.Filename(s, ext))
		if !errors.Is(err, ErrMissingIndex) {
			t.Errorf("%s: err = %v, want ErrMissingIndex", ext, err)
		}
	}
}

func TestReadPackageIndexMismatch(t *testing.T) {
	overrides := []map[string]any{
		{"name": "other"},
		{"version": "9.9"},
		{"build": "other_0"},
	}
	for _, ext := range []string{ExtTarBz2, ExtConda} {
		for _, o := range overrides {
			s := condatest.WithIndexOverride(testSpec(), o)
			fn := condatest.Filename(s, ext)
			_, err := readPkg(build(t, s, ext), fn)
			if !errors.Is(err, ErrIndexMismatch) {
				t.Errorf("%s %v: err = %v, want ErrIndexMismatch", ext, o, err)
				continue
			}
			msg := err.Error()
			if !strings.Contains(msg, "package file name and info files do not match") || !strings.Contains(msg, fn) {
				t.Errorf("message %q", msg)
			}
		}
	}
	// A .conda renamed to another stem.
	s := testSpec()
	_, err := readPkg(condatest.Conda(t, s), "renamed-1.2.3-py_0.conda")
	if !errors.Is(err, ErrIndexMismatch) {
		t.Errorf("renamed .conda: err = %v", err)
	}
	// A .tar.bz2 renamed.
	_, err = readPkg(condatest.TarBz2(t, s), "renamed-1.2.3-py_0.tar.bz2")
	if !errors.Is(err, ErrIndexMismatch) {
		t.Errorf("renamed .tar.bz2: err = %v", err)
	}
}

func TestReadPackageBadIndex(t *testing.T) {
	overrides := []map[string]any{
		{"name": nil},
		{"subdir": nil},
		{"version": 12},
		{"build": []any{"x"}},
		{"subdir": "Linux/64"},
		{"build_number": "zero"},
		{"build_number": -1},
		{"depends": "python"},
		{"depends": []any{1}},
	}
	for _, ext := range []string{ExtTarBz2, ExtConda} {
		for _, o := range overrides {
			s := condatest.WithIndexOverride(testSpec(), o)
			_, err := readPkg(build(t, s, ext), condatest.Filename(s, ext))
			if !errors.Is(err, ErrBadIndex) {
				t.Errorf("%s %v: err = %v, want ErrBadIndex", ext, o, err)
			}
		}
	}
}

func TestReadPackageIndexNotObject(t *testing.T) {
	for _, body := range []string{"[1,2]", "not json", `{"name":"x"} trailing`, ""} {
		files := map[string][]byte{"info/index.json": []byte(body)}
		_, err := newPackageInfo(Filename{"x", "1", "0", ExtConda}, files)
		if !errors.Is(err, ErrBadIndex) {
			t.Errorf("%q: err = %v", body, err)
		}
	}
}

func TestReadPackageCorruptZip(t *testing.T) {
	s := testSpec()
	b := condatest.Conda(t, s)
	fn := condatest.Filename(s, ExtConda)
	// Flip bytes inside the stored info component: at its start (zstd
	// frame header), middle and end (checksum).
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var start, n int64
	for _, f := range zr.File {
		if strings.HasPrefix(f.Name, "info-") {
			start, _ = f.DataOffset()
			n = int64(f.CompressedSize64)
		}
	}
	for _, off := range []int{int(start), int(start + n/2), int(start + n - 4)} {
		c := bytes.Clone(b)
		for i := off; i < off+4; i++ {
			c[i] ^= 0xff
		}
		if _, err := readPkg(c, fn); err == nil {
			t.Errorf("corrupt at %d: no error", off)
		} else if !errors.Is(err, ErrBadArchive) && !errors.Is(err, ErrMissingIndex) {
			t.Errorf("corrupt at %d: err = %v", off, err)
		}
	}
	// Zero out the end of central directory record.
	c := bytes.Clone(b)
	copy(c[len(c)-22:], make([]byte, 22))
	if _, err := readPkg(c, fn); !errors.Is(err, ErrBadArchive) {
		t.Errorf("no EOCD: err = %v", err)
	}
}

// writeZip builds a zip from name/content pairs.
func writeZip(t *testing.T, entries ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := 0; i+1 < len(entries); i += 2 {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: entries[i], Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, entries[i+1])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReadPackageCondaLayout(t *testing.T) {
	fn := "x-1-0.conda"
	cases := map[string]struct {
		zip  []byte
		want error
	}{
		"missing info":    {writeZip(t, "metadata.json", `{"conda_pkg_format_version": 2}`, "pkg-x-1-0.tar.zst", ""), ErrBadArchive},
		"missing pkg":     {writeZip(t, "info-x-1-0.tar.zst", ""), ErrBadArchive},
		"bad metadata":    {writeZip(t, "metadata.json", `{"conda_pkg_format_version": 3}`, "info-x-1-0.tar.zst", "", "pkg-x-1-0.tar.zst", ""), ErrBadArchive},
		"info not zstd":   {writeZip(t, "info-x-1-0.tar.zst", "plain", "pkg-x-1-0.tar.zst", ""), ErrBadArchive},
		"unsafe entry":    {writeZip(t, "../info-x-1-0.tar.zst", "", "pkg-x-1-0.tar.zst", ""), ErrUnsafeArchive},
		"duplicate entry": {writeZip(t, "info-x-1-0.tar.zst", "", "info-x-1-0.tar.zst", "", "pkg-x-1-0.tar.zst", ""), ErrBadArchive},
	}
	for name, tc := range cases {
		if _, err := readPkg(tc.zip, fn); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
}

func TestReadPackageOversizedInfo(t *testing.T) {
	s := testSpec()
	s.About = map[string]any{"description": strings.Repeat("x", maxInfoFileSize+1)}
	for _, ext := range []string{ExtTarBz2, ExtConda} {
		_, err := readPkg(build(t, s, ext), condatest.Filename(s, ext))
		if !errors.Is(err, ErrBadArchive) || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("%s: err = %v", ext, err)
		}
	}
}

// failingReaderAt fails every read.
type failingReaderAt struct{}

var errDisk = errors.New("disk on fire")

func (failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, errDisk }

func TestReadPackageReaderError(t *testing.T) {
	for _, fn := range []string{"x-1-0.tar.bz2", "x-1-0.conda"} {
		_, err := ReadPackage(failingReaderAt{}, 1000, fn)
		if !errors.Is(err, errDisk) || errors.Is(err, ErrBadArchive) {
			t.Errorf("%s: err = %v, want unclassified errDisk", fn, err)
		}
	}
}

func TestHasher(t *testing.T) {
	data := []byte("conda package bytes")
	h := NewHasher()
	h.Write(data[:5])
	h.Write(data[5:])
	d := h.Sum()
	if d.Size != int64(len(data)) || d.MD5 != md5.Sum(data) || d.SHA256 != sha256.Sum256(data) {
		t.Errorf("Sum = %+v", d)
	}
	d2, err := HashReader(bytes.NewReader(data))
	if err != nil || d2 != d {
		t.Errorf("HashReader = %+v, %v", d2, err)
	}
	if d.MD5Hex() != "0fcd35d3cc5ad6b3a3e2a0c1b8a7c7d0" && len(d.MD5Hex()) != 32 {
		t.Errorf("MD5Hex = %s", d.MD5Hex())
	}
	if len(d.SHA256Hex()) != 64 {
		t.Errorf("SHA256Hex = %s", d.SHA256Hex())
	}
}

func TestNewRecord(t *testing.T) {
	s := testSpec()
	b := condatest.Conda(t, s)
	info, err := readPkg(b, condatest.Filename(s, ExtConda))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := HashReader(bytes.NewReader(b))
	r := NewRecord(info, d)
	if r.Filename != "demo-pkg-1.2.3-py_0.conda" || r.Subdir != "linux-64" {
		t.Errorf("record = %+v", r)
	}
	if r.Fields["sha256"] != d.SHA256Hex() || r.Fields["md5"] != d.MD5Hex() || r.Fields["size"] != int64(len(b)) {
		t.Errorf("fields = %v", r.Fields)
	}
	// Mutating the record must not touch the PackageInfo.
	r.Fields["depends"].([]any)[0] = "changed"
	if info.Index["depends"].([]any)[0] == "changed" {
		t.Errorf("NewRecord shares index slices")
	}
	enc := EncodeRecordFields(r.Fields)
	back, err := DecodeRecordFields(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(EncodeRecordFields(back), enc) {
		t.Errorf("round trip changed encoding:\n%s\n%s", enc, EncodeRecordFields(back))
	}
	if _, ok := back["timestamp"].(json.Number); !ok {
		t.Errorf("timestamp = %#v, want json.Number", back["timestamp"])
	}
	if r.Name() != "demo-pkg" || r.Version() != "1.2.3" || r.BuildNumber() != 0 || r.Timestamp() != condatest.DefaultTimestamp {
		t.Errorf("accessors: %s %s %d %d", r.Name(), r.Version(), r.BuildNumber(), r.Timestamp())
	}
	if _, err := DecodeRecordFields([]byte("[]")); err == nil {
		t.Errorf("DecodeRecordFields([]) succeeded")
	}
}
