package conda

import (
	"errors"
	"fmt"
	"io"
)

// RawRecord is one record of a repodata document as ScanRawRecords gives
// it: where its JSON is, not what it says. JSON aliases the scanner's
// buffer and is valid only during the callback.
type RawRecord struct {
	// Filename is the package file name (checked as every scan checks
	// it); Name is the package name it gives.
	Filename string
	Name     string
	// Conda says the file is a .conda (listed under packages.conda).
	Conda bool
	// Offset is where JSON begins in the document.
	Offset int64
	// JSON is the record's value as the document writes it.
	JSON []byte
}

// ScanRawRecords reads a repodata document as ScanShardPairs does, but
// hands each record over uncut: the document's structure, its header and
// every file name are checked (a file name listed twice, or under the
// wrong section, refuses the document), each record must be an object,
// but its fields are neither read nor checked: a caller transcodes the
// records it needs with TranscodeRecord.
//
// Why: after a small upstream change a proxy needs the shard entries of
// the few names whose records changed, and can tell them by digests of
// their JSON. Splitting a conda-forge-sized index this way is several
// times faster than transcoding every record (BenchmarkScanForge), so it
// keeps up with the download.
func ScanRawRecords(r io.Reader, opt ScanOptions, each func(*RawRecord) error) (*RepodataDoc, error) {
	if opt.MaxValue <= 0 {
		opt.MaxValue = MaxRepodataValue
	}
	s := &repodataScanner{p: jsonParser{keys: map[string]string{}}, r: r, max: opt.MaxValue, want: opt.Want}
	s.raw = each
	return s.scan(nil)
}

// rawRecord hands the record fn at the parser to s.raw, unread.
func (s *repodataScanner) rawRecord(fn string, file func(string) (Filename, error)) error {
	p := &s.p
	span, err := s.ensureValue()
	if err != nil {
		return err
	}
	if span <= 0 { // only at the end of a truncated document
		return p.fail("looking for beginning of value")
	}
	parsed, err := file(fn)
	if err != nil {
		return err
	}
	if p.b[p.i] != '{' {
		return fmt.Errorf("%w: %q is not an object", ErrBadRepodata, fn)
	}
	s.rawRec = RawRecord{Filename: fn, Name: parsed.Name, Conda: parsed.Ext == ExtConda, Offset: s.base + int64(p.i), JSON: p.b[p.i : p.i+span]}
	p.i += span
	return s.raw(&s.rawRec)
}

// TranscodeRecord returns the record of file fn whose JSON is b (a
// RawRecord's) as ScanShardPairs would give it, checked as it checks it:
// a refused record is an ErrBadRepodata. What it returns is its own.
func TranscodeRecord(fn string, b []byte) (*PairRecord, error) {
	parsed, err := ParseFilename(fn)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRepodata, err)
	}
	section := "packages"
	if parsed.Ext == ExtConda {
		section = "packages.conda"
	}
	t := &pairTranscoder{p: &jsonParser{keys: map[string]string{}}}
	pair, err := t.one(section, fn, parsed, b)
	if _, ok := errors.AsType[*syntaxError](err); ok {
		return nil, fmt.Errorf("%w: %w", ErrBadRepodata, err)
	}
	if err != nil {
		return nil, err
	}
	return &PairRecord{
		Filename:    fn,
		Name:        parsed.Name,
		Conda:       parsed.Ext == ExtConda,
		Version:     append([]byte(nil), t.version...),
		BuildNumber: t.buildNumber,
		Pair:        append([]byte(nil), pair...),
		JSON:        b,
	}, nil
}

// one transcodes the record fn (parsed) of section whose JSON is exactly
// b: its shard entry (in t's buffer), its version and build number in t.
func (t *pairTranscoder) one(section, fn string, parsed Filename, b []byte) ([]byte, error) {
	p := t.p
	p.b, p.i = b, 0
	pair, err := t.record(fn, parsed)
	if err == nil && p.i != len(p.b) {
		err = p.fail("after object key:value pair")
	}
	var check recordError
	if errors.As(err, &check) {
		err = fmt.Errorf("%w: %s: %q: %v", ErrBadRepodata, section, fn, check)
	}
	return pair, err
}
