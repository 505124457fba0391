package forgegen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Stats counts what was written for one subdir.
type Stats struct {
	Subdir   string
	Records  int
	Bytes    int64
	Packages int // real package files
}

// PackageSink receives the real package files of a subdir as they are
// generated.
type PackageSink func(subdir, filename string, data []byte) error

// WriteRepodata writes subdir's repodata.json to w, streaming: the
// .tar.bz2 records under "packages", then the .conda ones under
// "packages.conda" (each name's records are generated once per section),
// in conda-index's layout. Real package files go to sink (may be nil).
func (c *Channel) WriteRepodata(ctx context.Context, w io.Writer, subdir string, sink PackageSink) (Stats, error) {
	group, ok := c.groups[subdir]
	if !ok {
		return Stats{}, fmt.Errorf("%w: no subdir %q", ErrConfig, subdir)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	st := Stats{Subdir: subdir}
	buf := make([]byte, 0, 4096)
	buf = append(buf, "{\n  \"info\": {\n    \"subdir\": "...)
	buf = appendString(buf, subdir)
	buf = append(buf, "\n  },\n"...)
	for i, section := range []string{"packages", "packages.conda"} {
		wantConda := i == 1
		buf = append(buf, "  \""+section+"\": {"...)
		n := 0
		for _, name := range group {
			if err := ctx.Err(); err != nil {
				return st, err
			}
			recs, err := c.records(subdir, name)
			if err != nil {
				return st, err
			}
			for j := range recs {
				rec := &recs[j]
				if rec.Conda() != wantConda {
					continue
				}
				if n > 0 {
					buf = append(buf, ',')
				}
				buf = appendRecord(buf, rec)
				n++
				if rec.Package != nil && sink != nil {
					if err := sink(subdir, rec.Filename, rec.Package); err != nil {
						return st, err
					}
					st.Packages++
				}
			}
			if len(buf) >= 1<<16 {
				if _, err := bw.Write(buf); err != nil {
					return st, err
				}
				st.Bytes += int64(len(buf))
				buf = buf[:0]
			}
		}
		st.Records += n
		if n > 0 {
			buf = append(buf, "\n  "...)
		}
		buf = append(buf, "},\n"...)
	}
	buf = append(buf, "  \"removed\": [],\n  \"repodata_version\": 1\n}\n"...)
	if _, err := bw.Write(buf); err != nil {
		return st, err
	}
	st.Bytes += int64(len(buf))
	return st, bw.Flush()
}

// appendRecord appends one "filename": {record} member at the depth of a
// packages section.
func appendRecord(b []byte, r *Record) []byte {
	b = append(b, "\n    "...)
	b = appendString(b, r.Filename)
	b = append(b, ": {\n      \"build\": "...)
	b = appendString(b, r.Build)
	b = append(b, ",\n      \"build_number\": "...)
	b = strconv.AppendInt(b, int64(r.BuildNumber), 10)
	if len(r.Constrains) > 0 {
		b = appendList(b, "constrains", r.Constrains)
	}
	b = appendList(b, "depends", r.Depends)
	b = appendField(b, "license", r.License)
	if r.LicenseFamily != "" {
		b = appendField(b, "license_family", r.LicenseFamily)
	}
	b = appendField(b, "md5", r.MD5)
	b = appendField(b, "name", r.Name)
	if r.Noarch != "" {
		b = appendField(b, "noarch", r.Noarch)
	}
	b = appendField(b, "sha256", r.SHA256)
	b = append(b, ",\n      \"size\": "...)
	b = strconv.AppendInt(b, r.Size, 10)
	b = appendField(b, "subdir", r.Subdir)
	b = append(b, ",\n      \"timestamp\": "...)
	b = strconv.AppendInt(b, r.Timestamp, 10)
	b = appendField(b, "version", r.Version)
	return append(b, "\n    }"...)
}

// appendString appends s as a JSON string. Generated strings are
// printable ASCII without quotes or backslashes (TestStringsNeedNoEscape),
// so they need no escaping.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendField(b []byte, key, v string) []byte {
	b = append(b, ",\n      \""+key+"\": "...)
	return appendString(b, v)
}

func appendList(b []byte, key string, vs []string) []byte {
	b = append(b, ",\n      \""+key+"\": ["...)
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n        "...)
		b = appendString(b, v)
	}
	if len(vs) > 0 {
		b = append(b, "\n      "...)
	}
	return append(b, ']')
}

// WriteDir writes the channel under dir: <subdir>/repodata.json for every
// subdir and the real package files beside them. Each file is written to a
// temporary name and renamed into place, so a server reading dir sees the
// old or the new file, never half of one.
func (c *Channel) WriteDir(ctx context.Context, dir string) ([]Stats, error) {
	var all []Stats
	for _, subdir := range c.Subdirs() {
		sd := filepath.Join(dir, subdir)
		if err := os.MkdirAll(sd, 0o755); err != nil {
			return all, err
		}
		sink := func(_, fn string, data []byte) error { return writeAtomic(filepath.Join(sd, fn), data) }
		st, err := writeFileAtomic(filepath.Join(sd, "repodata.json"), func(w io.Writer) (Stats, error) {
			return c.WriteRepodata(ctx, w, subdir, sink)
		})
		if err != nil {
			return all, fmt.Errorf("forgegen: %s: %w", subdir, err)
		}
		all = append(all, st)
	}
	_, err := writeFileAtomic(filepath.Join(dir, "channeldata.json"), func(w io.Writer) (Stats, error) {
		return Stats{}, c.WriteChannelData(w)
	})
	return all, err
}

// WriteChannelData writes channeldata.json (CEP-38 layout, a short entry
// per name: its subdirs, latest version and license).
func (c *Channel) WriteChannelData(w io.Writer) error {
	subdirsOf := map[string][]string{}
	var names []*nameInfo
	for _, sd := range c.Subdirs() {
		for _, n := range c.groups[sd] {
			if subdirsOf[n.name] == nil {
				names = append(names, n)
			}
			subdirsOf[n.name] = append(subdirsOf[n.name], sd)
		}
	}
	slices.SortFunc(names, func(a, b *nameInfo) int { return strings.Compare(a.name, b.name) })
	bw := bufio.NewWriterSize(w, 1<<16)
	b := []byte("{\n  \"channeldata_version\": 1,\n  \"packages\": {")
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		latest, _, _ := n.version(int(n.versions) - 1)
		b = append(b, "\n    "...)
		b = appendString(b, n.name)
		b = append(b, ": {\n      \"license\": "...)
		b = appendString(b, licenses[n.license].name)
		b = appendList(b, "subdirs", subdirsOf[n.name])
		b = appendField(b, "version", latest)
		b = append(b, "\n    }"...)
		if _, err := bw.Write(b); err != nil {
			return err
		}
		b = b[:0]
	}
	b = append(b, "\n  },\n  \"subdirs\": ["...)
	for i, sd := range slices.Sorted(slices.Values(c.Subdirs())) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n    "...)
		b = appendString(b, sd)
	}
	b = append(b, "\n  ]\n}\n"...)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	return bw.Flush()
}

func writeAtomic(path string, data []byte) error {
	_, err := writeFileAtomic(path, func(w io.Writer) (Stats, error) {
		_, err := w.Write(data)
		return Stats{}, err
	})
	return err
}

// writeFileAtomic writes path through a temporary file in its directory.
func writeFileAtomic(path string, write func(io.Writer) (Stats, error)) (Stats, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return Stats{}, err
	}
	defer os.Remove(f.Name())
	st, err := write(f)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return st, err
	}
	return st, os.Rename(f.Name(), path)
}
