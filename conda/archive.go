package conda

import (
	"archive/tar"
	"archive/zip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// maxInfoFileSize is the largest info/ file ReadPackage will load.
const maxInfoFileSize = 16 << 20

// maxZstdWindow bounds the zstd window ReadPackage accepts in .conda
// components. conda-package-handling uses at most 2^27 (level 22).
const maxZstdWindow = 1 << 27

// Archive member names ReadPackage loads.
const (
	indexJSONPath      = "info/index.json"
	aboutJSONPath      = "info/about.json"
	runExportsJSONPath = "info/run_exports.json"
	condaMetadataJSON  = "metadata.json"
)

// PackageInfo is the metadata ReadPackage extracts from a package archive.
type PackageInfo struct {
	// Index is info/index.json, decoded with json.Number for numbers so
	// integers stay integers.
	Index map[string]any
	// IndexJSON is the raw bytes of info/index.json.
	IndexJSON []byte
	// About is info/about.json, or nil if the archive has none.
	About map[string]any
	// RunExports is info/run_exports.json, or nil if the archive has none.
	RunExports map[string]any
	// Filename is the parsed package file name.
	Filename Filename
}

// ReadPackage reads the metadata of the package archive held in r (size
// bytes long) and named filename, which selects the format by extension.
//
// A .tar.bz2 is streamed from the start until info/index.json,
// info/about.json and info/run_exports.json have all been seen, or to the
// end; payload members are skipped, never loaded. When all three are found
// the rest of the archive is neither read nor checked, so a package with
// run_exports.json can hide a bad member or truncation after its info
// files; without it the whole archive is verified. For a .conda only the
// info-<stem>.tar.zst component is decompressed. Every tar member walked
// past is checked: absolute names, ".." components, link targets leaving
// the archive root and device nodes fail with ErrUnsafeArchive.
//
// ReadPackage suits bytes whose sha256 someone trusted already vouched for
// (a mirror's upstream record); a package about to be accepted from a
// client goes through VerifyPackage.
//
// Errors wrap ErrBadFilename, ErrBadArchive, ErrUnsafeArchive,
// ErrMissingIndex, ErrIndexMismatch or ErrBadIndex; a read error from r
// itself is returned wrapped but unclassified.
func ReadPackage(r io.ReaderAt, size int64, filename string) (*PackageInfo, error) {
	return readPackage(r, size, filename, nil)
}

// DefaultMaxUnpacked is VerifyOptions.MaxUnpacked when it is zero.
const DefaultMaxUnpacked int64 = 64 << 30

// VerifyOptions bound VerifyPackage.
type VerifyOptions struct {
	// MaxUnpacked bounds the decompressed bytes of all tar streams of one
	// archive together (a compression bomb is refused once it has
	// produced that much). Zero means DefaultMaxUnpacked.
	MaxUnpacked int64
	// Bzip2Workers is how many goroutines decode the blocks of a
	// .tar.bz2's bzip2 stream in parallel; 1 decodes it sequentially with
	// the library reader (the parallel decoder's off switch). Zero means
	// GOMAXPROCS.
	Bzip2Workers int
}

// VerifyPackage is ReadPackage checking the whole archive, for a package
// about to be accepted (an upload): every member of every tar stream is
// checked (names, types, link targets) and every compressed stream must
// decode to its end with its checksums. For a .tar.bz2 that is the whole
// bzip2 stream; for a .conda every zip entry (CRC-32) and both the
// info-<stem>.tar.zst and pkg-<stem>.tar.zst components. Members may be
// regular files, directories, symlinks and hard links (plus pax global
// headers); other types are ErrUnsafeArchive. An archive that unpacks to
// more than opt.MaxUnpacked bytes is ErrBadArchive.
func VerifyPackage(r io.ReaderAt, size int64, filename string, opt VerifyOptions) (*PackageInfo, error) {
	max := opt.MaxUnpacked
	if max <= 0 {
		max = DefaultMaxUnpacked
	}
	workers := opt.Bzip2Workers
	if workers <= 0 {
		workers = defaultBzip2Workers()
	}
	return readPackage(r, size, filename, &unpackBudget{left: max, max: max, bzip2Workers: workers})
}

// unpackBudget counts the decompressed bytes VerifyPackage still allows;
// a nil budget means ReadPackage's metadata-only reading.
type unpackBudget struct {
	left, max    int64
	bzip2Workers int
}

// reader counts r's bytes against the budget.
func (b *unpackBudget) reader(r io.Reader) io.Reader { return &budgetReader{r: r, b: b} }

type budgetReader struct {
	r io.Reader
	b *unpackBudget
}

func (br *budgetReader) Read(p []byte) (int, error) {
	n, err := br.r.Read(p)
	br.b.left -= int64(n)
	if br.b.left < 0 {
		return n, fmt.Errorf("unpacks to more than %d bytes", br.b.max)
	}
	return n, err
}

func readPackage(r io.ReaderAt, size int64, filename string, full *unpackBudget) (*PackageInfo, error) {
	fn, err := ParseFilename(filename)
	if err != nil {
		return nil, err
	}
	src := &trackingReaderAt{r: r}
	var files map[string][]byte
	switch fn.Ext {
	case ExtTarBz2:
		files, err = readTarBz2(src, size, fn, full)
	default:
		files, err = readConda(src, size, fn, full)
	}
	if err != nil {
		if src.err != nil {
			return nil, fmt.Errorf("conda: reading %s: %w", fn, src.err)
		}
		return nil, err
	}
	return newPackageInfo(fn, files)
}

// trackingReaderAt remembers the first error from the underlying ReaderAt
// other than io.EOF, so storage failures are not mistaken for bad archives.
// The parallel bzip2 decoder reads it from several goroutines.
type trackingReaderAt struct {
	r   io.ReaderAt
	mu  sync.Mutex
	err error
}

func (t *trackingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := t.r.ReadAt(p, off)
	if err != nil && err != io.EOF {
		t.mu.Lock()
		if t.err == nil {
			t.err = err
		}
		t.mu.Unlock()
	}
	return n, err
}

// badArchive wraps ErrBadArchive with the file name and a cause.
// Truncation is named as such.
func badArchive(fn Filename, cause error) error {
	if errors.Is(cause, io.ErrUnexpectedEOF) {
		cause = fmt.Errorf("truncated: %w", cause)
	}
	return fmt.Errorf("%w %s: %w", ErrBadArchive, fn, cause)
}

// readTarBz2 loads the wanted info files from a bzip2 tarball; with a
// budget (full) it walks and decodes the whole archive.
func readTarBz2(r io.ReaderAt, size int64, fn Filename, full *unpackBudget) (map[string][]byte, error) {
	var magic [4]byte
	if n, _ := r.ReadAt(magic[:], 0); n < len(magic) || size < int64(len(magic)) ||
		string(magic[:3]) != "BZh" || magic[3] < '1' || magic[3] > '9' {
		return nil, badArchive(fn, errors.New("not a bzip2 file"))
	}
	want := []string{indexJSONPath, aboutJSONPath, runExportsJSONPath}
	if full != nil {
		br := newBzip2Reader(r, size, full.bzip2Workers)
		defer br.Close()
		return readInfoTar(full.reader(br), fn, want, false)
	}
	return readInfoTar(sequentialBzip2(r, size), fn, want, true)
}

// readConda loads the wanted info files from a .conda zip; with a budget
// (full) it also reads every other entry and walks the pkg component.
func readConda(r io.ReaderAt, size int64, fn Filename, full *unpackBudget) (map[string][]byte, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		if errors.Is(err, zip.ErrFormat) {
			return nil, badArchive(fn, errors.New("not a zip file"))
		}
		return nil, badArchive(fn, err)
	}
	infoName := "info-" + fn.Stem() + ".tar.zst"
	pkgName := "pkg-" + fn.Stem() + ".tar.zst"
	var info, pkg, meta *zip.File
	var otherInfo string
	var others []*zip.File
	for _, f := range zr.File {
		if err := checkMemberName(f.Name); err != nil {
			return nil, fmt.Errorf("%w %s: zip entry %q %w", ErrUnsafeArchive, fn, f.Name, err)
		}
		var slot **zip.File
		switch f.Name {
		case infoName:
			slot = &info
		case pkgName:
			slot = &pkg
		case condaMetadataJSON:
			slot = &meta
		default:
			if strings.HasPrefix(f.Name, "info-") && strings.HasSuffix(f.Name, ".tar.zst") {
				otherInfo = f.Name
			}
			others = append(others, f)
			continue
		}
		if *slot != nil {
			return nil, badArchive(fn, fmt.Errorf("duplicate zip entry %q", f.Name))
		}
		*slot = f
	}
	if info == nil {
		if otherInfo != "" {
			return nil, fmt.Errorf("%w: %s contains %s", ErrIndexMismatch, fn, otherInfo)
		}
		return nil, badArchive(fn, fmt.Errorf("missing %s", infoName))
	}
	if pkg == nil {
		return nil, badArchive(fn, fmt.Errorf("missing %s", pkgName))
	}
	if meta != nil {
		if err := checkCondaMetadata(meta); err != nil {
			return nil, badArchive(fn, err)
		}
	}
	want := []string{indexJSONPath, aboutJSONPath, runExportsJSONPath}
	files, err := readComponent(info, fn, want, full)
	if err != nil || full == nil {
		return files, err
	}
	if _, err := readComponent(pkg, fn, nil, full); err != nil {
		return nil, err
	}
	// Entries conda ignores are read too: their CRC-32 must hold.
	for _, f := range others {
		rc, err := f.Open()
		if err != nil {
			return nil, badArchive(fn, fmt.Errorf("zip entry %q: %w", f.Name, err))
		}
		_, err = io.Copy(io.Discard, full.reader(rc))
		rc.Close()
		if err != nil {
			return nil, badArchive(fn, fmt.Errorf("zip entry %q: %w", f.Name, err))
		}
	}
	return files, nil
}

// readComponent walks the tar.zst zip entry f to its end, checking every
// member, and returns the wanted files. Reading the entry to its end
// checks its CRC-32. With a budget its decompressed bytes count against it.
func readComponent(f *zip.File, fn Filename, want []string, full *unpackBudget) (map[string][]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, badArchive(fn, err)
	}
	defer rc.Close()
	zd, err := zstd.NewReader(rc,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(maxZstdWindow))
	if err != nil {
		return nil, badArchive(fn, err)
	}
	defer zd.Close()
	var tr io.Reader = zd
	if full != nil {
		tr = full.reader(zd)
	}
	files, err := readInfoTar(tr, fn, want, false)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return nil, badArchive(fn, err)
	}
	return files, nil
}

// checkCondaMetadata validates the metadata.json entry of a .conda.
func checkCondaMetadata(f *zip.File) error {
	rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("metadata.json: %w", err)
	}
	defer rc.Close()
	b, err := readLimited(rc)
	if err != nil {
		return fmt.Errorf("metadata.json: %w", err)
	}
	m, err := decodeObject(b)
	if err != nil {
		return fmt.Errorf("metadata.json: %w", err)
	}
	if v, ok := m["conda_pkg_format_version"]; ok && fmt.Sprint(v) != "2" {
		return fmt.Errorf("metadata.json: unsupported conda_pkg_format_version %v", v)
	}
	return nil
}

// readInfoTar walks the tar stream in r, checking every member, and
// returns the contents of the wanted regular files. With stopEarly it
// stops once all wanted files were found; otherwise, and when they are not
// all present, it reads r to its end so that truncated or corrupt
// compressed data is reported.
func readInfoTar(r io.Reader, fn Filename, want []string, stopEarly bool) (map[string][]byte, error) {
	tr := tar.NewReader(r)
	files := make(map[string][]byte, len(want))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return nil, badArchive(fn, err)
			}
			return files, nil
		}
		if err != nil && !(errors.Is(err, tar.ErrInsecurePath) && hdr != nil) {
			return nil, badArchive(fn, err)
		}
		if err := checkMember(hdr); err != nil {
			return nil, fmt.Errorf("%w %s: member %q %w", ErrUnsafeArchive, fn, hdr.Name, err)
		}
		key := memberKey(hdr.Name)
		wanted := false
		for _, w := range want {
			wanted = wanted || key == w
		}
		if !wanted {
			continue
		}
		if _, dup := files[key]; dup {
			return nil, badArchive(fn, fmt.Errorf("duplicate member %s", key))
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, badArchive(fn, fmt.Errorf("%s is not a regular file", key))
		}
		if hdr.Size > maxInfoFileSize {
			return nil, badArchive(fn, fmt.Errorf("%s larger than %d bytes", key, maxInfoFileSize))
		}
		b, err := readLimited(tr)
		if err != nil {
			return nil, badArchive(fn, fmt.Errorf("%s: %w", key, err))
		}
		files[key] = b
		if stopEarly && len(files) == len(want) {
			return files, nil
		}
	}
}

// readLimited reads r to EOF, refusing more than maxInfoFileSize bytes.
func readLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxInfoFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxInfoFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxInfoFileSize)
	}
	return b, nil
}

// memberKey normalises a member name for comparison: leading "./" are
// dropped and the path is cleaned.
func memberKey(name string) string {
	for strings.HasPrefix(name, "./") {
		name = name[2:]
	}
	return path.Clean(name)
}

// checkMember rejects tar members that could write outside the extraction
// root or that are anything but regular files, directories and links.
func checkMember(hdr *tar.Header) error {
	if err := checkMemberName(hdr.Name); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeXGlobalHeader:
	case tar.TypeSymlink:
		if err := checkSymlink(hdr.Name, hdr.Linkname); err != nil {
			return err
		}
	case tar.TypeLink:
		if err := checkMemberName(hdr.Linkname); err != nil {
			return fmt.Errorf("hard link target %w", err)
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return errors.New("is a special file")
	default:
		return fmt.Errorf("has unsupported type %q", hdr.Typeflag)
	}
	return nil
}

// checkMemberName rejects empty and absolute names and names with ".."
// components. Backslashes count as separators too, for Windows clients.
func checkMemberName(name string) error {
	if name == "" {
		return errors.New("is empty")
	}
	if strings.ContainsRune(name, 0) {
		return errors.New("contains NUL")
	}
	if isAbs(name) {
		return errors.New("is absolute")
	}
	for _, c := range splitPath(name) {
		if c == ".." {
			return errors.New("escapes the archive root")
		}
	}
	return nil
}

// checkSymlink rejects a symlink at name whose target is absolute or
// resolves outside the archive root.
func checkSymlink(name, target string) error {
	if target == "" {
		return errors.New("has an empty link target")
	}
	if isAbs(target) {
		return errors.New("links to an absolute path")
	}
	depth := 0
	if dir := splitPath(memberKey(name)); len(dir) > 1 {
		for _, c := range dir[:len(dir)-1] {
			if c != "." {
				depth++
			}
		}
	}
	for _, c := range splitPath(target) {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return errors.New("links outside the archive root")
			}
		default:
			depth++
		}
	}
	return nil
}

// isAbs reports whether a member name is absolute on POSIX or Windows.
func isAbs(name string) bool {
	if name[0] == '/' || name[0] == '\\' {
		return true
	}
	return len(name) >= 2 && name[1] == ':' &&
		(name[0] >= 'a' && name[0] <= 'z' || name[0] >= 'A' && name[0] <= 'Z')
}

// splitPath splits a member name on '/' and '\'.
func splitPath(name string) []string {
	return strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == '\\' })
}

// newPackageInfo validates the loaded info files against the file name.
func newPackageInfo(fn Filename, files map[string][]byte) (*PackageInfo, error) {
	raw, ok := files[indexJSONPath]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrMissingIndex, fn)
	}
	index, err := decodeObject(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadIndex, fn, err)
	}
	if err := checkIndex(index); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadIndex, fn, err)
	}
	name, version, build := index["name"].(string), index["version"].(string), index["build"].(string)
	if name != fn.Name || version != fn.Version || build != fn.Build {
		return nil, fmt.Errorf("%w: %s has name %q, version %q, build %q in info/index.json",
			ErrIndexMismatch, fn, name, version, build)
	}
	info := &PackageInfo{Index: index, IndexJSON: raw, Filename: fn}
	if b, ok := files[aboutJSONPath]; ok {
		if info.About, err = decodeObject(b); err != nil {
			return nil, badArchive(fn, fmt.Errorf("%s: %w", aboutJSONPath, err))
		}
	}
	if b, ok := files[runExportsJSONPath]; ok {
		if info.RunExports, err = decodeObject(b); err != nil {
			return nil, badArchive(fn, fmt.Errorf("%s: %w", runExportsJSONPath, err))
		}
	}
	return info, nil
}

// checkIndex validates the fields of info/index.json that repodata
// consumers rely on.
func checkIndex(index map[string]any) error {
	for _, k := range []string{"name", "version", "build", "subdir"} {
		if s, ok := index[k].(string); !ok || s == "" {
			return fmt.Errorf("%s missing or not a string", k)
		}
	}
	if name := index["name"].(string); !ValidPackageName(name) {
		return fmt.Errorf("invalid package name %q", name)
	}
	if subdir := index["subdir"].(string); !ValidSubdir(subdir) {
		return fmt.Errorf("invalid subdir %q", subdir)
	}
	if v, ok := index["build_number"]; ok {
		if n, ok := asInt64(v); !ok || n < 0 {
			return errors.New("build_number not a non-negative integer")
		}
	}
	for _, k := range []string{"depends", "constrains"} {
		v, ok := index[k]
		if !ok {
			continue
		}
		list, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s not a list", k)
		}
		for _, e := range list {
			if _, ok := e.(string); !ok {
				return fmt.Errorf("%s entry not a string", k)
			}
		}
	}
	return nil
}

// asInt64 converts an integer-valued JSON number (json.Number, any Go
// integer type, or an integral float64) to int64.
func asInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case int:
		return int64(n), true
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		if n > 1<<63-1 {
			return 0, false
		}
		return int64(n), true
	case float64:
		if n != float64(int64(n)) {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}

// Identify names a package archive from its content alone: a .conda by its
// info-<stem>.tar.zst member, a .tar.bz2 by its info/index.json. It lets a
// store of content-addressed blobs (which keeps no file names) rebuild
// package records; validate the result with ReadPackage.
func Identify(r io.ReaderAt, size int64) (string, error) {
	var magic [4]byte
	if n, _ := r.ReadAt(magic[:], 0); n < len(magic) {
		return "", fmt.Errorf("%w: too short to be a package", ErrBadArchive)
	}
	placeholder := Filename{Name: "unknown", Version: "0", Build: "0"}
	switch {
	case string(magic[:]) == "PK\x03\x04":
		zr, err := zip.NewReader(r, size)
		if err != nil {
			return "", badArchive(placeholder, err)
		}
		for _, f := range zr.File {
			if stem, ok := strings.CutPrefix(f.Name, "info-"); ok && strings.HasSuffix(stem, ".tar.zst") {
				name := strings.TrimSuffix(stem, ".tar.zst") + ExtConda
				if _, err := ParseFilename(name); err != nil {
					return "", err
				}
				return name, nil
			}
		}
		return "", fmt.Errorf("%w: no info-*.tar.zst member", ErrBadArchive)
	case string(magic[:3]) == "BZh":
		placeholder.Ext = ExtTarBz2
		files, err := readTarBz2(r, size, placeholder, nil)
		if err != nil {
			return "", err
		}
		index, err := decodeObject(files[indexJSONPath])
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrBadIndex, err)
		}
		name, _ := index["name"].(string)
		version, _ := index["version"].(string)
		build, _ := index["build"].(string)
		fn := name + "-" + version + "-" + build + ExtTarBz2
		if _, err := ParseFilename(fn); err != nil {
			return "", err
		}
		return fn, nil
	}
	return "", fmt.Errorf("%w: neither a .conda nor a .tar.bz2", ErrBadArchive)
}
