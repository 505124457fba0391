// Package condatest builds real conda package archives in memory for
// tests across the repository: valid .tar.bz2 and .conda files from a
// Spec, and deliberately broken ones (index.json disagreeing with the
// file name, members escaping the archive root). Output is deterministic:
// the same Spec gives the same bytes. Truncated archives are made by
// slicing the returned bytes.
package condatest

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/zstd"
)

// DefaultTimestamp is the index.json timestamp (milliseconds) used when
// Spec.Timestamp is zero: 2024-01-02T03:04:05Z.
const DefaultTimestamp int64 = 1704164645000

// Spec describes a package to build.
type Spec struct {
	Name, Version, Build string
	// Subdir defaults to "noarch" when empty.
	Subdir      string
	BuildNumber int
	Depends     []string
	// Noarch is "python" or "generic" for noarch packages, else empty.
	Noarch string
	// Files maps payload paths to their content.
	Files map[string]string
	// About is merged over the default about.json.
	About map[string]any
	// Timestamp is the index.json timestamp in milliseconds;
	// DefaultTimestamp when zero.
	Timestamp int64
	// RunExports, when non-nil, is written as info/run_exports.json.
	RunExports map[string]any

	// IndexOverride is merged over the derived index.json; a nil value
	// deletes the key. Use it to make index.json disagree with the file
	// name or to write invalid fields.
	IndexOverride map[string]any
	// OmitIndex leaves info/index.json out of the archive.
	OmitIndex bool
	// Extra members are written first in the (info) tar, before any other
	// member, with no validation: use them for "../evil" names, absolute
	// paths or symlinks escaping the root.
	Extra []Member
	// Trailing members are written last, with no validation: after the
	// info files and the payload in a .tar.bz2, at the end of the
	// pkg-<stem>.tar.zst component of a .conda. A reader that stops once
	// it has the info files never sees them.
	Trailing []Member
}

// Member is a raw tar member for Spec.Extra.
type Member struct {
	Name string
	// Type is a tar type flag; tar.TypeReg when zero.
	Type byte
	// Linkname is the link target for symlinks and hard links.
	Linkname string
	Content  string
}

// WithIndexOverride returns a copy of s whose index.json has the given
// keys replaced (nil deletes a key).
func WithIndexOverride(s Spec, m map[string]any) Spec {
	o := maps.Clone(s.IndexOverride)
	if o == nil {
		o = map[string]any{}
	}
	maps.Copy(o, m)
	s.IndexOverride = o
	return s
}

// WithMember returns a copy of s with an extra raw member written first.
func WithMember(s Spec, m Member) Spec {
	s.Extra = append(slices.Clone(s.Extra), m)
	return s
}

// WithEscapingMember returns a copy of s with a regular member named
// "../evil", which escapes the extraction root.
func WithEscapingMember(s Spec) Spec {
	return WithMember(s, Member{Name: "../evil", Content: "evil\n"})
}

// Filename returns name-version-build plus ext (".conda" or ".tar.bz2").
func Filename(s Spec, ext string) string {
	return s.Name + "-" + s.Version + "-" + s.Build + ext
}

// Index returns the index.json object Spec s produces.
func Index(s Spec) map[string]any {
	subdir := s.subdir()
	idx := map[string]any{
		"name":         s.Name,
		"version":      s.Version,
		"build":        s.Build,
		"build_number": s.BuildNumber,
		"depends":      append([]string{}, s.Depends...),
		"subdir":       subdir,
		"license":      "MIT",
		"timestamp":    s.timestamp(),
	}
	if subdir == "noarch" {
		idx["arch"] = nil
		idx["platform"] = nil
	} else {
		platform, arch, _ := strings.Cut(subdir, "-")
		switch arch {
		case "64":
			arch = "x86_64"
		case "32":
			arch = "x86"
		}
		idx["arch"] = arch
		idx["platform"] = platform
	}
	if s.Noarch != "" {
		idx["noarch"] = s.Noarch
	}
	for k, v := range s.IndexOverride {
		if v == nil {
			delete(idx, k)
		} else {
			idx[k] = v
		}
	}
	return idx
}

func (s Spec) subdir() string {
	if s.Subdir == "" {
		return "noarch"
	}
	return s.Subdir
}

func (s Spec) timestamp() int64 {
	if s.Timestamp == 0 {
		return DefaultTimestamp
	}
	return s.Timestamp
}

func (s Spec) mtime() time.Time {
	return time.UnixMilli(s.timestamp()).UTC().Truncate(time.Second)
}

// infoFiles returns the info/ members (path -> content).
func (s Spec) infoFiles() (map[string][]byte, error) {
	about := map[string]any{
		"summary": "Test package " + s.Name,
		"license": "MIT",
		"home":    "https://example.invalid/" + s.Name,
	}
	maps.Copy(about, s.About)
	var paths []any
	var files strings.Builder
	for _, p := range slices.Sorted(maps.Keys(s.Files)) {
		sum := sha256.Sum256([]byte(s.Files[p]))
		paths = append(paths, map[string]any{
			"_path":         p,
			"path_type":     "hardlink",
			"sha256":        hex.EncodeToString(sum[:]),
			"size_in_bytes": len(s.Files[p]),
		})
		files.WriteString(p + "\n")
	}
	if paths == nil {
		paths = []any{}
	}
	members := map[string]any{
		"info/about.json": about,
		"info/paths.json": map[string]any{"paths": paths, "paths_version": 1},
	}
	if !s.OmitIndex {
		members["info/index.json"] = Index(s)
	}
	if s.RunExports != nil {
		members["info/run_exports.json"] = s.RunExports
	}
	out := map[string][]byte{"info/files": []byte(files.String())}
	for name, v := range members {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("condatest: %s: %w", name, err)
		}
		out[name] = append(b, '\n')
	}
	return out, nil
}

// writeTar writes extra members, then files in sorted order, then
// trailing members, as a tar.
func writeTar(mtime time.Time, extra []Member, files map[string][]byte, trailing []Member) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := writeMembers(tw, mtime, extra); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		hdr := &tar.Header{
			Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[name])),
			ModTime: mtime, Format: tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("condatest: tar header %q: %w", name, err)
		}
		if _, err := tw.Write(files[name]); err != nil {
			return nil, fmt.Errorf("condatest: tar: %w", err)
		}
	}
	if err := writeMembers(tw, mtime, trailing); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("condatest: tar: %w", err)
	}
	return buf.Bytes(), nil
}

// writeMembers writes raw members to tw.
func writeMembers(tw *tar.Writer, mtime time.Time, members []Member) error {
	for _, m := range members {
		typ := m.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{
			Name: m.Name, Typeflag: typ, Linkname: m.Linkname, Mode: 0o644,
			ModTime: mtime, Format: tar.FormatPAX,
		}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(m.Content))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("condatest: tar header %q: %w", m.Name, err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(m.Content)); err != nil {
				return fmt.Errorf("condatest: tar: %w", err)
			}
		}
	}
	return nil
}

// payload returns the payload files as bytes.
func (s Spec) payload() map[string][]byte {
	out := make(map[string][]byte, len(s.Files))
	for p, c := range s.Files {
		out[p] = []byte(c)
	}
	return out
}

// must ends the test on err, else returns b.
func must(t testing.TB, b []byte, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TarBz2 builds s as a .tar.bz2 package: extra members, then info/ files,
// then the payload, bzip2-compressed at level 9.
func TarBz2(t testing.TB, s Spec) []byte {
	t.Helper()
	b, err := BuildTarBz2(s)
	return must(t, b, err)
}

// BuildTarBz2 is TarBz2 for callers that are not tests (generators):
// it returns the error instead of ending a test.
func BuildTarBz2(s Spec) ([]byte, error) {
	files, err := s.infoFiles()
	if err != nil {
		return nil, err
	}
	maps.Copy(files, s.payload())
	raw, err := writeTar(s.mtime(), s.Extra, files, s.Trailing)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w, err := bzip2.NewWriter(&buf, &bzip2.WriterConfig{Level: 9})
	if err != nil {
		return nil, fmt.Errorf("condatest: bzip2: %w", err)
	}
	if _, err := w.Write(raw); err != nil {
		return nil, fmt.Errorf("condatest: bzip2: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("condatest: bzip2: %w", err)
	}
	return buf.Bytes(), nil
}

// Conda builds s as a .conda package: a zip of stored entries
// metadata.json, info-<stem>.tar.zst (extra members, then info/ files)
// and pkg-<stem>.tar.zst (payload). Local headers carry sizes and CRCs, so
// streaming zip readers can read it.
func Conda(t testing.TB, s Spec) []byte {
	t.Helper()
	b, err := BuildConda(s)
	return must(t, b, err)
}

// BuildConda is Conda for callers that are not tests (generators): it
// returns the error instead of ending a test.
func BuildConda(s Spec) ([]byte, error) {
	stem := Filename(s, "")
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("condatest: zstd: %w", err)
	}
	defer enc.Close()
	files, err := s.infoFiles()
	if err != nil {
		return nil, err
	}
	infoTar, err := writeTar(s.mtime(), s.Extra, files, nil)
	if err != nil {
		return nil, err
	}
	pkgTar, err := writeTar(s.mtime(), nil, s.payload(), s.Trailing)
	if err != nil {
		return nil, err
	}
	return writeZip(s.mtime(), []zipEntry{
		{"metadata.json", []byte(`{"conda_pkg_format_version": 2}`)},
		{"pkg-" + stem + ".tar.zst", enc.EncodeAll(pkgTar, nil)},
		{"info-" + stem + ".tar.zst", enc.EncodeAll(infoTar, nil)},
	})
}

// ReplaceCondaEntry returns a copy of the .conda b in which the zip entry
// name holds f(its bytes) instead, with a matching CRC-32: a valid zip
// around a component of the caller's making (truncated, corrupt). A name
// b lacks is added with f(nil).
func ReplaceCondaEntry(t testing.TB, b []byte, name string, f func([]byte) []byte) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("condatest: read zip: %v", err)
	}
	var entries []zipEntry
	var mtime time.Time
	found := false
	for _, zf := range zr.File {
		rc, err := zf.Open()
		if err != nil {
			t.Fatalf("condatest: open %s: %v", zf.Name, err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("condatest: read %s: %v", zf.Name, err)
		}
		if zf.Name == name {
			data, found = f(data), true
		}
		entries = append(entries, zipEntry{zf.Name, data})
		mtime = zf.Modified
	}
	if !found {
		entries = append(entries, zipEntry{name, f(nil)})
	}
	out, err := writeZip(mtime, entries)
	return must(t, out, err)
}

type zipEntry struct {
	name string
	data []byte
}

// writeZip writes entries as stored zip entries whose local headers carry
// sizes and CRCs.
func writeZip(mtime time.Time, entries []zipEntry) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		hdr := &zip.FileHeader{
			Name:               e.name,
			Method:             zip.Store,
			Modified:           mtime,
			CRC32:              crc32.ChecksumIEEE(e.data),
			CompressedSize64:   uint64(len(e.data)),
			UncompressedSize64: uint64(len(e.data)),
		}
		w, err := zw.CreateRaw(hdr)
		if err != nil {
			return nil, fmt.Errorf("condatest: zip: %w", err)
		}
		if _, err := w.Write(e.data); err != nil {
			return nil, fmt.Errorf("condatest: zip: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("condatest: zip: %w", err)
	}
	return buf.Bytes(), nil
}
