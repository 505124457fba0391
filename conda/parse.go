package conda

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// RepodataDoc is a repodata.json document that passed ParseRepodata.
type RepodataDoc struct {
	// Subdir is info.subdir, or "" if absent.
	Subdir string
	// BaseURL is info.base_url (repodata_version 2), or "" if absent.
	BaseURL string
	// RepodataVersion is repodata_version, or 0 if absent.
	RepodataVersion int64
	// Packages are the .tar.bz2 records by file name.
	Packages map[string]map[string]any
	// PackagesConda are the .conda records by file name.
	PackagesConda map[string]map[string]any
	// Removed lists the file names under "removed".
	Removed []string
}

// Records returns all records sorted by file name. A record's Subdir is
// its own "subdir" field when present, else the document's.
func (d *RepodataDoc) Records() []Record {
	out := make([]Record, 0, len(d.Packages)+len(d.PackagesConda))
	for _, section := range []map[string]map[string]any{d.Packages, d.PackagesConda} {
		for fn, f := range section {
			subdir, _ := f["subdir"].(string)
			if subdir == "" {
				subdir = d.Subdir
			}
			out = append(out, Record{Filename: fn, Subdir: subdir, Fields: f})
		}
	}
	return uniqueRecords(out)
}

// ParseRepodata parses an untrusted repodata.json. It checks that the
// document is a JSON object; that info, if present, is an object whose
// subdir is a valid subdir; that packages and packages.conda, if present,
// are objects of objects keyed by file names that pass ParseFilename with
// the extension matching the section, each listed once; and that in each
// record name (if present) matches the file name, version, build and subdir
// are strings, build_number and size are non-negative integers, md5 and
// sha256 are hex digests of the right length, and depends and constrains
// are lists of strings. A document naming one of these top-level keys twice
// is refused. Numbers are kept as json.Number. Errors wrap ErrBadRepodata.
func ParseRepodata(b []byte) (*RepodataDoc, error) {
	packages, condas := map[string]map[string]any{}, map[string]map[string]any{}
	doc, err := ScanRepodata(b, func(r Record) error {
		if isConda(r.Filename) {
			condas[r.Filename] = r.Fields
		} else {
			packages[r.Filename] = r.Fields
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	doc.Packages, doc.PackagesConda = packages, condas
	return doc, nil
}

// ScanRepodata checks an untrusted repodata.json as ParseRepodata does,
// without holding the document's tree: it parses one record at a time and
// passes it to each, in document order (Subdir is the record's own subdir
// field, or ""). It returns the document's other fields; Packages and
// PackagesConda stay nil. On an error, records already passed on belong to
// a document that is refused. each's error ends the scan and is returned.
func ScanRepodata(b []byte, each func(Record) error) (*RepodataDoc, error) {
	s := &repodataScanner{p: jsonParser{b: b, keys: map[string]string{}}, eof: true}
	return s.scan(each)
}

// MaxRepodataValue is the default bound of ScanRepodataReader on one value
// of the document (a record, or a header field such as "removed").
const MaxRepodataValue = 64 << 20

// ScanOptions adjust ScanRepodataReader.
type ScanOptions struct {
	// MaxValue bounds one value of the document (a record, or a header
	// field such as "removed"), with the whitespace around it: a larger
	// one refuses the document. Default MaxRepodataValue.
	MaxValue int
	// Want, if set, picks the records to parse by file name: the others
	// are skipped over (their file names are still checked, their fields
	// are not), which makes a scan for a few names of a large index many
	// times faster.
	Want func(filename string) bool
	// Workers, above 1, is how many goroutines ScanShardPairs transcodes
	// records on (the callback still gets them in order, from one
	// goroutine at a time); 0 or 1 transcodes on the scanning goroutine.
	// Other scans ignore it.
	Workers int
	// SumJSON asks ScanShardPairs for PairRecord.JSONSum.
	SumJSON bool
}

// ScanRepodataReader is ScanRepodata reading the document from r: it holds
// one record (or header value) at a time, never the document, so a
// conda-forge-sized repodata.json (hundreds of megabytes) is checked and
// scanned in a few megabytes of memory. Errors of r are returned as they
// are (not as ErrBadRepodata).
func ScanRepodataReader(r io.Reader, opt ScanOptions, each func(Record) error) (*RepodataDoc, error) {
	if opt.MaxValue <= 0 {
		opt.MaxValue = MaxRepodataValue
	}
	s := &repodataScanner{p: jsonParser{keys: map[string]string{}}, r: r, max: opt.MaxValue, want: opt.Want}
	return s.scan(each)
}

// repodataScanner runs the checks of ScanRepodata over a window of the
// document: before the parser reads a key or a value, ensure makes sure
// the window holds all of it (found by a lenient structural scan), so the
// strict parser (jsonParser) never needs bytes beyond the window. With the
// whole document in the window (eof from the start), ensure does nothing.
type repodataScanner struct {
	p    jsonParser
	r    io.Reader
	eof  bool
	max  int
	want func(filename string) bool
	buf  []byte
	// pairs, when set, takes each record instead of each (ScanShardPairs).
	pairs func(*PairRecord) error
	// raw, when set, takes each record uncut and unchecked (ScanRawRecords).
	raw     func(*RawRecord) error
	rawRec  RawRecord
	sumJSON bool
	// base is the document offset of buf[0].
	base int64
	tr   *pairTranscoder
	par  *pairPipeline // transcoding on other goroutines (ScanOptions.Workers)
}

func (s *repodataScanner) scan(each func(Record) error) (*RepodataDoc, error) {
	p := &s.p
	if err := s.ensure(spaceEnd); err != nil {
		return nil, err
	}
	p.space()
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		if err := s.ensure(valueEnd); err != nil {
			return nil, err
		}
		if _, err := parseJSON(p.b[p.i:]); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadRepodata, err)
		}
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadRepodata)
	}
	doc := &RepodataDoc{}
	seen := map[string]bool{}
	err := s.members(true, func(key string) error {
		switch key {
		case "info", "repodata_version", "removed", "packages", "packages.conda":
			if seen[key] {
				return fmt.Errorf("%w: %s is given twice", ErrBadRepodata, key)
			}
			seen[key] = true
		}
		switch key {
		case "packages":
			return s.scanSection(key, ExtTarBz2, each)
		case "packages.conda":
			return s.scanSection(key, ExtConda, each)
		}
		if err := s.ensure(valueEnd); err != nil {
			return err
		}
		v, err := p.value(1)
		if err != nil {
			return err
		}
		return doc.header(key, v)
	})
	for err == nil { // only whitespace may follow
		if err = s.ensure(spaceEnd); err != nil {
			break
		}
		p.space()
		if p.i != len(p.b) {
			err = p.fail("after top-level value")
		} else if s.eof {
			break
		}
	}
	var syntax *syntaxError
	if errors.As(err, &syntax) {
		return nil, fmt.Errorf("%w: %w", ErrBadRepodata, err)
	}
	if err != nil {
		return nil, err
	}
	return doc, nil
}

// members reads the object at the parser (on its '{') member by member:
// each gets the key, with the parser on the start of the value, and must
// read the value. intern shares the strings of keys seen before.
func (s *repodataScanner) members(intern bool, each func(key string) error) error {
	p := &s.p
	p.i++ // {
	if err := s.ensure(spaceEnd); err != nil {
		return err
	}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return nil
	}
	for {
		if err := s.ensure(keyEnd); err != nil {
			return err
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return p.fail("looking for beginning of object key string")
		}
		k, err := p.str(intern)
		if err != nil {
			return err
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return p.fail("after object key")
		}
		p.i++
		if err := s.ensure(spaceEnd); err != nil {
			return err
		}
		p.space()
		if err := each(k); err != nil {
			return err
		}
		if err := s.ensure(spaceEnd); err != nil {
			return err
		}
		p.space()
		if p.i >= len(p.b) {
			return p.fail("after object key:value pair")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return nil
		default:
			return p.fail("after object key:value pair")
		}
	}
}

// scanSection reads one packages section, checking each record.
func (s *repodataScanner) scanSection(key, ext string, each func(Record) error) error {
	p := &s.p
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadRepodata, key, fmt.Sprintf(format, args...))
	}
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		if err := s.ensure(valueEnd); err != nil {
			return err
		}
		if _, err := p.value(1); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s is not an object", ErrBadRepodata, key)
	}
	var seen fileSet
	file := func(fn string) (Filename, error) {
		parsed, err := ParseFilename(fn)
		switch {
		case err != nil:
			return parsed, bad("%v", err)
		case parsed.Ext != ext:
			return parsed, bad("%q does not end in %s", fn, ext)
		case !seen.add(fn):
			return parsed, bad("%q is listed twice", fn)
		}
		return parsed, nil
	}
	return s.members(false, func(fn string) error {
		span := -1
		if s.par != nil {
			n, err := s.ensureValue()
			if err != nil {
				return err
			}
			span = n
		} else if err := s.ensure(valueEnd); err != nil {
			return err
		}
		var v any
		var err error
		skip := s.want != nil && !s.want(fn)
		if s.raw != nil && !skip {
			return s.rawRecord(fn, file)
		}
		if s.pairs != nil && !skip && p.i < len(p.b) && p.b[p.i] == '{' {
			parsed, err := file(fn)
			if err != nil {
				return err
			}
			if s.par != nil {
				if s.par.stopped.Load() {
					return errPipelineStopped
				}
				if span <= 0 { // only at the end of a truncated document
					return &syntaxError{"unexpected end of JSON input"}
				}
				s.par.add(key, fn, parsed, p.b[p.i:p.i+span])
				p.i += span
				return nil
			}
			err = s.pairRecord(fn, parsed)
			var check recordError
			if errors.As(err, &check) {
				return bad("%q: %v", fn, check)
			}
			return err
		}
		if skip {
			end := valueSpan(p.b[p.i:])
			if end <= 0 {
				return p.fail("looking for beginning of value")
			}
			p.i += end
		} else if v, err = p.value(2); err != nil {
			return err
		}
		parsed, err := file(fn)
		if err != nil {
			return err
		}
		if skip {
			return nil
		}
		rec, ok := v.(map[string]any)
		if !ok {
			return bad("%q is not an object", fn)
		}
		if err := checkRepodataRecord(parsed, rec); err != nil {
			return bad("%q: %v", fn, err)
		}
		subdir, _ := rec["subdir"].(string)
		return each(Record{Filename: fn, Subdir: subdir, Fields: rec})
	})
}

// fileSet is the set of file names of one section, for telling repeated
// ones. Upstreams list them sorted: while they come in increasing order
// they are only appended to a list (a map of half a million names was a
// tenth of a scan); the first one out of order turns the list into a map.
type fileSet struct {
	sorted []string
	m      map[string]bool
}

// add adds fn and says whether it is new.
func (f *fileSet) add(fn string) bool {
	if f.m == nil {
		if len(f.sorted) == 0 || fn > f.sorted[len(f.sorted)-1] {
			f.sorted = append(f.sorted, fn)
			return true
		}
		f.m = make(map[string]bool, len(f.sorted)+1)
		for _, s := range f.sorted {
			f.m[s] = true
		}
		f.sorted = nil
	}
	if f.m[fn] {
		return false
	}
	f.m[fn] = true
	return true
}

// readChunk is how much ScanRepodataReader reads at a time.
const readChunk = 256 << 10

// ensure makes the window hold, from the parser's position, all that end
// says the next step reads (or the rest of the document, at its end).
func (s *repodataScanner) ensure(end func(b []byte) int) error {
	for !s.eof {
		n := end(s.p.b[s.p.i:])
		if n > s.max {
			return fmt.Errorf("%w: a value larger than %d bytes", ErrBadRepodata, s.max)
		}
		if n >= 0 {
			return nil
		}
		if err := s.fill(); err != nil {
			return err
		}
	}
	return nil
}

// ensureValue is ensure(valueEnd) that also returns the value's extent
// (valueSpan; -1 at the end of a truncated document), for a caller that
// cuts the value out without parsing it (the transcoding workers).
func (s *repodataScanner) ensureValue() (int, error) {
	for {
		b := s.p.b[s.p.i:]
		span := valueSpan(b)
		if s.eof {
			return span, nil
		}
		n := -1
		if span >= 0 {
			n = within(b, skipSpace(b, span))
		}
		if n > s.max {
			return 0, fmt.Errorf("%w: a value larger than %d bytes", ErrBadRepodata, s.max)
		}
		if n >= 0 {
			return span, nil
		}
		if err := s.fill(); err != nil {
			return 0, err
		}
	}
}

// fill moves the unread part of the window to the front of the buffer
// and reads more after it, growing the buffer up to max.
func (s *repodataScanner) fill() error {
	p := &s.p
	rest := len(p.b) - p.i
	if rest > s.max {
		return fmt.Errorf("%w: a value larger than %d bytes", ErrBadRepodata, s.max)
	}
	if need := rest + readChunk; cap(s.buf) < need {
		nb := make([]byte, rest, max(need, 2*cap(s.buf)))
		copy(nb, p.b[p.i:])
		s.buf = nb
	} else {
		copy(s.buf[:rest], p.b[p.i:])
		s.buf = s.buf[:rest]
	}
	s.base += int64(p.i)
	p.i = 0
	n, err := io.ReadAtLeast(s.r, s.buf[rest:cap(s.buf)], 1)
	s.buf = s.buf[:rest+n]
	p.b = s.buf
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		s.eof = true
	case err != nil:
		return err
	}
	return nil
}

// The end functions return how many bytes of b (the window from the
// parser's position) the next step reads, or -1 if b does not hold them
// all yet. They are lenient: on malformed input they may stop early or
// late; the strict parser then fails within the window either way.

// spaceEnd: whitespace and the byte after it.
func spaceEnd(b []byte) int { return within(b, skipSpace(b, 0)) }

// within returns i+1 if b holds b[i], else -1.
func within(b []byte, i int) int {
	if i < len(b) {
		return i + 1
	}
	return -1
}

// keyEnd: an object key string, the colon after it, and the byte after
// that (or the byte that is not a key).
func keyEnd(b []byte) int {
	i := skipSpace(b, 0)
	if i >= len(b) {
		return -1
	}
	if b[i] != '"' {
		return i + 1
	}
	i, ok := stringEnd(b, i)
	if !ok {
		return -1
	}
	i = skipSpace(b, i)
	if i >= len(b) {
		return -1
	}
	return within(b, skipSpace(b, i+1))
}

// valueEnd: a whole value and the byte after it.
func valueEnd(b []byte) int {
	end := valueSpan(b)
	if end < 0 {
		return -1
	}
	return within(b, skipSpace(b, end))
}

// valueSpan returns the index just after the value b starts with (after
// whitespace), or -1 if b does not hold all of it. A scalar runs to the
// next delimiter, which it needs to see.
func valueSpan(b []byte) int {
	i := skipSpace(b, 0)
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, ok := stringEnd(b, i)
		if !ok {
			return -1
		}
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, ok := stringEnd(b, i)
				if !ok {
					return -1
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	}
	for ; i < len(b); i++ { // a scalar runs to a delimiter
		switch b[i] {
		case ',', '}', ']', ':', '"', '{', '[', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return -1
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index after the string starting at b[i] (a quote).
func stringEnd(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); {
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			return 0, false
		}
		q += j
		bs := 0
		for k := q - 1; k > i && b[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			return q + 1, true
		}
		j = q + 1
	}
	return 0, false
}

// header checks and keeps one of the document's other top-level fields.
func (d *RepodataDoc) header(key string, v any) error {
	bad := func(msg string) error { return fmt.Errorf("%w: %s", ErrBadRepodata, msg) }
	switch key {
	case "info":
		info, ok := v.(map[string]any)
		if !ok {
			return bad("info is not an object")
		}
		if v, ok := info["subdir"]; ok {
			s, ok := v.(string)
			if !ok || !ValidSubdir(s) {
				return bad("info.subdir is not a valid subdir")
			}
			d.Subdir = s
		}
		if v, ok := info["base_url"]; ok {
			if d.BaseURL, ok = v.(string); !ok {
				return bad("info.base_url is not a string")
			}
		}
	case "repodata_version":
		n, ok := asInt64(v)
		if !ok || n < 0 {
			return bad("repodata_version is not a non-negative integer")
		}
		d.RepodataVersion = n
	case "removed":
		list, ok := stringList(v)
		if !ok {
			return bad("removed is not a list of strings")
		}
		d.Removed = list
	}
	return nil
}

// checkRepodataRecord validates the record fields consumers rely on.
func checkRepodataRecord(fn Filename, rec map[string]any) error {
	if v, ok := rec["name"]; ok && v != fn.Name {
		return errors.New("name does not match the file name")
	}
	for _, k := range []string{"version", "build"} {
		if v, ok := rec[k]; ok {
			if _, ok := v.(string); !ok {
				return fmt.Errorf("%s is not a string", k)
			}
		}
	}
	if v, ok := rec["subdir"]; ok {
		if s, ok := v.(string); !ok || !ValidSubdir(s) {
			return errors.New("subdir is not a valid subdir")
		}
	}
	for _, k := range []string{"build_number", "size"} {
		if v, ok := rec[k]; ok {
			if n, ok := asInt64(v); !ok || n < 0 {
				return fmt.Errorf("%s is not a non-negative integer", k)
			}
		}
	}
	for k, n := range map[string]int{"md5": 16, "sha256": 32} {
		if v, ok := rec[k]; ok {
			s, ok := v.(string)
			if !ok || len(s) != 2*n {
				return fmt.Errorf("%s is not a %d-byte hex digest", k, n)
			}
			if _, err := hex.DecodeString(s); err != nil {
				return fmt.Errorf("%s is not a %d-byte hex digest", k, n)
			}
		}
	}
	for _, k := range []string{"depends", "constrains"} {
		if v, ok := rec[k]; ok {
			if _, ok := stringList(v); !ok {
				return fmt.Errorf("%s is not a list of strings", k)
			}
		}
	}
	return nil
}
