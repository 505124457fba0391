package conda

import (
	"encoding/hex"
	"errors"
	"fmt"
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
	p := jsonParser{b: b, keys: map[string]string{}}
	p.space()
	if p.i >= len(b) || b[p.i] != '{' {
		if _, err := parseJSON(b); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadRepodata, err)
		}
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadRepodata)
	}
	doc := &RepodataDoc{}
	seen := map[string]bool{}
	err := p.members(true, func(key string) error {
		switch key {
		case "info", "repodata_version", "removed", "packages", "packages.conda":
			if seen[key] {
				return fmt.Errorf("%w: %s is given twice", ErrBadRepodata, key)
			}
			seen[key] = true
		}
		switch key {
		case "packages":
			return p.scanSection(key, ExtTarBz2, each)
		case "packages.conda":
			return p.scanSection(key, ExtConda, each)
		}
		v, err := p.value(1)
		if err != nil {
			return err
		}
		return doc.header(key, v)
	})
	if err == nil {
		if p.space(); p.i != len(b) {
			err = p.fail("after top-level value")
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

// scanSection reads one packages section, checking each record.
func (p *jsonParser) scanSection(key, ext string, each func(Record) error) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadRepodata, key, fmt.Sprintf(format, args...))
	}
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		if _, err := p.value(1); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s is not an object", ErrBadRepodata, key)
	}
	seen := map[string]bool{}
	return p.members(false, func(fn string) error {
		v, err := p.value(2)
		if err != nil {
			return err
		}
		parsed, err := ParseFilename(fn)
		switch {
		case err != nil:
			return bad("%v", err)
		case parsed.Ext != ext:
			return bad("%q does not end in %s", fn, ext)
		case seen[fn]:
			return bad("%q is listed twice", fn)
		}
		seen[fn] = true
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
