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
// the extension matching the section; and that in each record name (if
// present) matches the file name, version, build and subdir are strings,
// build_number and size are non-negative integers, md5 and sha256 are hex
// digests of the right length, and depends and constrains are lists of
// strings. Numbers are kept as json.Number. Errors wrap ErrBadRepodata.
func ParseRepodata(b []byte) (*RepodataDoc, error) {
	top, err := decodeObject(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRepodata, err)
	}
	bad := func(format string, args ...any) (*RepodataDoc, error) {
		return nil, fmt.Errorf("%w: %s", ErrBadRepodata, fmt.Sprintf(format, args...))
	}
	doc := &RepodataDoc{
		Packages:      map[string]map[string]any{},
		PackagesConda: map[string]map[string]any{},
	}
	if v, ok := top["info"]; ok {
		info, ok := v.(map[string]any)
		if !ok {
			return bad("info is not an object")
		}
		if v, ok := info["subdir"]; ok {
			s, ok := v.(string)
			if !ok || !ValidSubdir(s) {
				return bad("info.subdir is not a valid subdir")
			}
			doc.Subdir = s
		}
		if v, ok := info["base_url"]; ok {
			if doc.BaseURL, ok = v.(string); !ok {
				return bad("info.base_url is not a string")
			}
		}
	}
	if v, ok := top["repodata_version"]; ok {
		n, ok := asInt64(v)
		if !ok || n < 0 {
			return bad("repodata_version is not a non-negative integer")
		}
		doc.RepodataVersion = n
	}
	sections := []struct {
		key, ext string
		dst      map[string]map[string]any
	}{
		{"packages", ExtTarBz2, doc.Packages},
		{"packages.conda", ExtConda, doc.PackagesConda},
	}
	for _, sec := range sections {
		v, ok := top[sec.key]
		if !ok {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return bad("%s is not an object", sec.key)
		}
		for fn, rv := range m {
			parsed, err := ParseFilename(fn)
			if err != nil {
				return bad("%s: %v", sec.key, err)
			}
			if parsed.Ext != sec.ext {
				return bad("%s: %q does not end in %s", sec.key, fn, sec.ext)
			}
			rec, ok := rv.(map[string]any)
			if !ok {
				return bad("%s: %q is not an object", sec.key, fn)
			}
			if err := checkRepodataRecord(parsed, rec); err != nil {
				return bad("%s: %q: %v", sec.key, fn, err)
			}
			sec.dst[fn] = rec
		}
	}
	if v, ok := top["removed"]; ok {
		list, ok := stringList(v)
		if !ok {
			return bad("removed is not a list of strings")
		}
		doc.Removed = list
	}
	return doc, nil
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
