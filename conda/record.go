package conda

import (
	"cmp"
	"fmt"
)

// Record is one repodata record: the package file name, the subdir it
// belongs to and the full record object as it appears under "packages" or
// "packages.conda" in repodata.json.
type Record struct {
	// Filename is the package file name, e.g. "zlib-1.3-h0_0.conda".
	Filename string
	// Subdir is the subdir (platform) the record is served from.
	Subdir string
	// Fields are the info/index.json fields plus md5, sha256 (lowercase
	// hex) and size. Values form a JSON value tree; numbers decoded from
	// JSON are json.Number so integers stay integers.
	Fields map[string]any
}

// NewRecord builds the repodata record for a package from its metadata and
// digests: a deep copy of info/index.json with md5, sha256 and size set.
// Nothing else (such as time_modified) is added.
func NewRecord(info *PackageInfo, d Digests) Record {
	fields, _ := cloneValue(info.Index).(map[string]any)
	if fields == nil {
		fields = map[string]any{}
	}
	fields["md5"] = d.MD5Hex()
	fields["sha256"] = d.SHA256Hex()
	fields["size"] = d.Size
	subdir, _ := fields["subdir"].(string)
	return Record{Filename: info.Filename.String(), Subdir: subdir, Fields: fields}
}

// DecodeRecordFields decodes stored record JSON (as written by
// EncodeRecordFields) into a field map, keeping numbers as json.Number.
func DecodeRecordFields(b []byte) (map[string]any, error) {
	m, err := decodeObject(b)
	if err != nil {
		return nil, fmt.Errorf("conda: decoding record: %w", err)
	}
	return m, nil
}

// EncodeRecordFields returns the compact JSON form of a record's fields,
// keys sorted, suitable for storage and for DecodeRecordFields.
func EncodeRecordFields(fields map[string]any) []byte {
	return appendJSON(nil, fields, false)
}

// Name returns the package name: the "name" field, or the name parsed from
// the file name when the field is missing.
func (r Record) Name() string {
	if s, ok := r.Fields["name"].(string); ok && s != "" {
		return s
	}
	fn, _ := ParseFilename(r.Filename)
	return fn.Name
}

// Version returns the "version" field, or the version parsed from the
// file name when the field is missing.
func (r Record) Version() string {
	if s, ok := r.Fields["version"].(string); ok && s != "" {
		return s
	}
	fn, _ := ParseFilename(r.Filename)
	return fn.Version
}

// BuildNumber returns the "build_number" field, or 0.
func (r Record) BuildNumber() int64 {
	n, _ := asInt64(r.Fields["build_number"])
	return n
}

// Timestamp returns the "timestamp" field (milliseconds since the epoch
// by convention), or 0.
func (r Record) Timestamp() int64 {
	n, ok := asInt64(r.Fields["timestamp"])
	if !ok {
		if f, isFloat := asFloat(r.Fields["timestamp"]); isFloat {
			n = int64(f)
		}
	}
	return n
}

// asFloat converts a JSON number to float64.
func asFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case interface{ Float64() (float64, error) }:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// cloneValue deep-copies a JSON value tree (maps and slices); scalars are
// shared.
func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = cloneValue(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = cloneValue(e)
		}
		return s
	case []string:
		return append([]string(nil), x...)
	case []byte:
		return append([]byte(nil), x...)
	}
	return v
}

// compareRecords orders records for "latest" selection: by version, then
// build number, then timestamp, then file name, then subdir. It is a total
// order on distinct (subdir, filename) pairs.
func compareRecords(a, b Record) int {
	if c := CompareVersions(a.Version(), b.Version()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.BuildNumber(), b.BuildNumber()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Timestamp(), b.Timestamp()); c != 0 {
		return c
	}
	if a.Filename != b.Filename {
		return cmp.Compare(a.Filename, b.Filename)
	}
	return cmp.Compare(a.Subdir, b.Subdir)
}
