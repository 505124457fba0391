package conda

import (
	"slices"
)

// channelStringFields are the per-package channeldata.json fields copied
// from the latest record's about.json (or, failing that, its index.json)
// when they are non-empty strings.
var channelStringFields = []string{
	"description", "dev_url", "doc_source_url", "doc_url", "home", "icon_url",
	"license", "recipe_origin", "source_git_url", "source_url", "summary",
}

// channelListFields are per-package fields copied from about.json when
// they are lists of strings.
var channelListFields = []string{"keywords", "tags"}

// ChannelMeta returns the per-file metadata ChannelData expects in its
// about argument: a copy of info/about.json with, when the package has
// info/run_exports.json, its content under "run_exports". It returns nil
// when the package has neither.
func ChannelMeta(info *PackageInfo) map[string]any {
	if info.About == nil && info.RunExports == nil {
		return nil
	}
	m, _ := cloneValue(info.About).(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	if info.RunExports != nil {
		m["run_exports"] = cloneValue(info.RunExports)
	}
	return m
}

// ChannelData returns channeldata.json (CEP-38) for a channel.
//
// subdirs lists the channel's subdirs; "noarch" and every subdir with
// records are added, and the list is written sorted. recs holds the
// records per subdir. about holds per-file metadata (about.json fields,
// plus "run_exports" as built by ChannelMeta), looked up first as
// "subdir/filename" and then as "filename"; it may be nil or lack entries.
//
// For each package name the entry has, from the latest record
// (CompareVersions, then build number, timestamp, file name, subdir):
// version and the string fields description, dev_url, doc_source_url,
// doc_url, home, icon_url, license, recipe_origin, source_git_url,
// source_url and summary (about.json first, index.json second) and the
// keywords and tags lists; across all records: timestamp (the maximum),
// subdirs (sorted) and run_exports keyed by version (the latest build of
// each version that has any). Output is indented JSON with sorted keys
// and does not depend on input order.
func ChannelData(subdirs []string, recs map[string][]Record, about map[string]map[string]any) []byte {
	doc := map[string]any{
		"channeldata_version": 1,
		"packages":            channelPackages(recs, about),
		"subdirs":             channelSubdirs(subdirs, recs),
	}
	return append(appendJSON(nil, doc, true), '\n')
}

// channelSubdirs returns the sorted union of subdirs, "noarch" and the
// subdirs with records.
func channelSubdirs(subdirs []string, recs map[string][]Record) []string {
	set := map[string]bool{"noarch": true}
	for _, s := range subdirs {
		set[s] = true
	}
	for s, rs := range recs {
		if len(rs) > 0 {
			set[s] = true
		}
	}
	return sortedKeys(set)
}

// channelPackages builds the "packages" map of channeldata.json.
func channelPackages(recs map[string][]Record, about map[string]map[string]any) map[string]any {
	byName := map[string][]Record{}
	for _, subdir := range sortedKeys(recs) {
		for _, r := range uniqueRecords(recs[subdir]) {
			r.Subdir = subdir
			byName[r.Name()] = append(byName[r.Name()], r)
		}
	}
	out := make(map[string]any, len(byName))
	for name, rs := range byName {
		slices.SortFunc(rs, compareRecords)
		out[name] = channelPackage(rs, about)
	}
	return out
}

// channelPackage builds one package entry from its records sorted by
// compareRecords.
func channelPackage(rs []Record, about map[string]map[string]any) map[string]any {
	latest := rs[len(rs)-1]
	meta := lookupMeta(about, latest)
	pkg := map[string]any{"version": latest.Version()}
	for _, k := range channelStringFields {
		if s, ok := meta[k].(string); ok && s != "" {
			pkg[k] = s
		} else if s, ok := latest.Fields[k].(string); ok && s != "" {
			pkg[k] = s
		}
	}
	for _, k := range channelListFields {
		if l, ok := stringList(meta[k]); ok && len(l) > 0 {
			pkg[k] = l
		}
	}
	var ts int64
	subdirs := map[string]bool{}
	runExports := map[string]any{}
	for _, r := range rs {
		ts = max(ts, r.Timestamp())
		subdirs[r.Subdir] = true
		if re, ok := lookupMeta(about, r)["run_exports"]; ok && re != nil {
			runExports[r.Version()] = re
		}
	}
	if ts > 0 {
		pkg["timestamp"] = ts
	}
	pkg["subdirs"] = sortedKeys(subdirs)
	if len(runExports) > 0 {
		pkg["run_exports"] = runExports
	}
	return pkg
}

// lookupMeta finds the metadata of a record by "subdir/filename", then by
// "filename".
func lookupMeta(about map[string]map[string]any, r Record) map[string]any {
	if m, ok := about[r.Subdir+"/"+r.Filename]; ok {
		return m
	}
	return about[r.Filename]
}

// stringList returns v as a []string if it is a list of strings.
func stringList(v any) ([]string, bool) {
	switch x := v.(type) {
	case []string:
		return x, true
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}
