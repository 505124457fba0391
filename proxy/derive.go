package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"github.com/ipfs/go-cid"
)

// derivedPrefix marks the ETag of an entry built locally from another
// cached file: "derived:<CID of the source>".
const derivedPrefix = "derived:"

// derivable tells whether path can be built from the subdir's
// repodata.json, and returns that source path.
func derivable(path string) (string, bool) {
	subdir, file, ok := strings.Cut(path, "/")
	if !ok || !conda.ValidSubdir(subdir) {
		return "", false
	}
	switch {
	case file == "repodata.json.zst", file == "repodata.json.bz2",
		file == "current_repodata.json", file == "current_repodata.json.zst", file == "current_repodata.json.bz2",
		file == "repodata_shards.msgpack.zst",
		strings.HasPrefix(file, "shards/") && strings.HasSuffix(file, ".msgpack.zst") && !strings.Contains(file[len("shards/"):], "/"):
		return subdir + "/repodata.json", true
	}
	return "", false
}

// derive builds path from the subdir's cached (or freshly fetched)
// repodata.json, stores it, and records it (for shards: the index and every
// shard) with the source's validation time, so it is revalidated with it.
func (p *Proxy) derive(ctx context.Context, ch *v1.Channel, path, src string) (Result, error) {
	srcRes, err := p.Get(ctx, ch, src)
	if err != nil {
		return Result{}, fmt.Errorf("derive %s from %s: %w", path, src, err)
	}
	srcEntry, err := p.cat.ProxyEntry(ctx, ch.Name, src)
	if err != nil {
		return Result{}, err
	}
	raw, err := p.blobs.ReadAll(ctx, srcRes.CID)
	if err != nil {
		return Result{}, err
	}
	subdir, file, _ := strings.Cut(path, "/")
	files := map[string][]byte{}
	var recs []conda.Record
	needRecords := strings.HasPrefix(file, "current_") || strings.Contains(file, "shards")
	if needRecords {
		doc, err := conda.ParseRepodata(raw)
		if err != nil {
			return Result{}, fmt.Errorf("%w: %s/%s: %v", ErrCorrupt, ch.Name, src, err)
		}
		recs = doc.Records()
	}
	switch {
	case file == "repodata.json.zst":
		files[path] = conda.Zstd(raw)
	case file == "repodata.json.bz2":
		files[path] = conda.Bzip2(raw)
	case strings.HasPrefix(file, "current_repodata.json"):
		cur := conda.CurrentRepodata(subdir, recs)
		files[subdir+"/current_repodata.json"] = cur
		files[subdir+"/current_repodata.json.zst"] = conda.Zstd(cur)
		files[subdir+"/current_repodata.json.bz2"] = conda.Bzip2(cur)
	default: // shard index and shards
		index, shards, err := conda.Shards(subdir, recs)
		if err != nil {
			return Result{}, err
		}
		for h, b := range shards {
			files[subdir+"/shards/"+h+".msgpack.zst"] = b
		}
		files[subdir+"/repodata_shards.msgpack.zst"] = index
	}
	if _, ok := files[path]; !ok {
		// A shard name that is not (or no longer) in the derived index.
		return Result{}, fmt.Errorf("%w: %s/%s", ErrNotFound, ch.Name, path)
	}
	paths := make([]string, 0, len(files))
	for fp := range files {
		paths = append(paths, fp)
	}
	sort.Strings(paths)
	entries := make([]*v1.ProxyEntry, 0, len(files))
	var want cid.Cid
	for _, fp := range paths {
		info, err := p.blobs.Put(ctx, bytes.NewReader(files[fp]), store.PutOptions{})
		if err != nil {
			return Result{}, err
		}
		if fp == path {
			want = info.CID
		}
		entries = append(entries, &v1.ProxyEntry{
			Channel: ch.Name, Path: fp, Cid: info.CID.String(), Etag: derivedPrefix + srcRes.CID.String(),
			LastModified: srcEntry.LastModified, ValidatedUnix: srcEntry.ValidatedUnix, Size: info.Size, Status: 200,
		})
	}
	// Shards first, the index last, in one command.
	if err := p.record(ctx, entries...); err != nil {
		return Result{}, err
	}
	p.log.Info("derived index files from upstream repodata", "channel", ch.Name, "path", path, "files", len(entries))
	if want == cid.Undef {
		return Result{}, errors.New("proxy: derived file missing")
	}
	return Result{CID: want, ModTime: srcRes.ModTime, Immutable: isImmutable(path)}, nil
}
