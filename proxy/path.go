package proxy

import (
	"errors"
	"strings"

	"github.com/condamesh/condamesh/conda"
)

// maxPathLen bounds a proxied path: a subdir, "/", and a package file name
// at their longest.
const maxPathLen = 64 + 1 + 255

// topFiles are the channel-level files a proxy fetches.
var topFiles = map[string]bool{"channeldata.json": true, "index.html": true}

// subdirFiles are the index files of a subdir a proxy fetches (besides
// packages and shards).
var subdirFiles = map[string]bool{
	"repodata.json": true, "repodata.json.zst": true, "repodata.json.bz2": true, "repodata.json.gz": true,
	"current_repodata.json": true, "current_repodata.json.zst": true, "current_repodata.json.bz2": true, "current_repodata.json.gz": true,
	"repodata_from_packages.json": true, "repodata_from_packages.json.zst": true, "repodata_from_packages.json.bz2": true,
	"repodata_from_packages.json.gz": true, "repodata_shards.msgpack.zst": true, "repodata.jlap": true,
	"patch_instructions.json": true, "index.html": true,
}

// errBadPath explains why a path cannot be a conda channel's file; Get
// answers such a path with ErrNotFound, before any upstream request.
var errBadPath = errors.New("not a conda channel file")

// checkPath reports whether p (decoded, channel-relative) can name a file
// of a conda channel: a channel-level index file, a subdir's index file,
// a package file with a valid name, or a CEP-16 shard, in a subdir conda
// knows. Anything else (other depths, characters outside conda's names,
// unknown file names or subdirs, longer than maxPathLen) is refused: an
// upstream that answers 200 for any subdir would otherwise let random
// subdir names write replicated cache entries.
func checkPath(p string) error {
	if len(p) > maxPathLen {
		return errBadPath
	}
	segs := strings.Split(p, "/")
	switch {
	case len(segs) == 1:
		if topFiles[p] {
			return nil
		}
	case !conda.KnownSubdir(segs[0]):
	case len(segs) == 2:
		if subdirFiles[segs[1]] || isShardName(segs[1]) { // a shard beside its index (conda-index)
			return nil
		}
		if _, err := conda.ParseFilename(segs[1]); err == nil {
			return nil
		}
	case len(segs) == 3:
		if isShardDir(segs[1]) && isShardName(segs[2]) { // shards/ (rattler-index), or another directory
			return nil
		}
	}
	return errBadPath
}

// isShardDir reports a directory name a shard index's shards_base_url may
// name inside a subdir: letters, digits, '.', '_' and '-', not "." or
// "..", at most 64 bytes.
func isShardDir(d string) bool {
	if d == "" || d == "." || d == ".." || len(d) > 64 {
		return false
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// isShardName reports a CEP-16 shard file name: 64 lowercase hex digits
// (the sha256 of the shard) and ".msgpack.zst".
func isShardName(f string) bool {
	h, ok := strings.CutSuffix(f, ".msgpack.zst")
	if !ok || len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
