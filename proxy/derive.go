package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"github.com/ipfs/go-cid"
)

// derivedPrefix marks the ETag of an entry built locally from another
// cached file: "derived:<CID of the source>".
const derivedPrefix = "derived:"

// derivedFrom returns the CID of the source of a derived entry.
func derivedFrom(e *v1.ProxyEntry) (string, bool) {
	return strings.CutPrefix(e.Etag, derivedPrefix)
}

// derivable tells whether path can be built from the subdir's
// repodata.json, and returns that source path and the anchor of path's
// group (the files derived together): the file whose entry says whether,
// and from which source, the group was derived.
func derivable(path string) (src, anchor string, ok bool) {
	subdir, file, ok := strings.Cut(path, "/")
	if !ok || !conda.ValidSubdir(subdir) {
		return "", "", false
	}
	src = subdir + "/repodata.json"
	switch {
	case file == "repodata.json.zst", file == "repodata.json.bz2", file == "repodata.json.gz":
		return src, path, true
	case file == "current_repodata.json", file == "current_repodata.json.zst", file == "current_repodata.json.bz2", file == "current_repodata.json.gz":
		return src, subdir + "/current_repodata.json", true
	case file == "repodata_shards.msgpack.zst",
		strings.HasPrefix(file, "shards/") && strings.HasSuffix(file, ".msgpack.zst") && !strings.Contains(file[len("shards/"):], "/"):
		return src, subdir + "/repodata_shards.msgpack.zst", true
	}
	return "", "", false
}

// derive answers path from its group, derived from the subdir's current
// repodata.json unless that was done already. The derivation of a group
// runs once however many clients ask for its files. A file of a group the
// upstream publishes itself (its anchor is an upstream file) is never
// derived.
func (p *Proxy) derive(ctx context.Context, ch *v1.Channel, path string) (Result, error) {
	src, anchor, _ := derivable(path)
	if path != anchor {
		if ae, err := p.cat.ProxyEntry(ctx, ch.Name, anchor); err == nil && ae.Status == http.StatusOK {
			if _, derived := derivedFrom(ae); !derived {
				return Result{}, fmt.Errorf("%w: %s/%s", ErrNotFound, ch.Name, path)
			}
		}
	}
	v, err, _ := p.sf.Do("derive\x00"+key(ch.Name, anchor), func() (any, error) {
		// Shared by every caller waiting on it: the first one leaving
		// must not fail the others.
		return p.deriveGroup(context.WithoutCancel(ctx), ch, anchor, src)
	})
	if err != nil {
		return Result{}, fmt.Errorf("derive %s from %s: %w", path, src, err)
	}
	e, err := p.cat.ProxyEntry(ctx, ch.Name, path)
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && e.Etag != v.(string)) {
		// A shard name that is not (or no longer) in the derived index.
		return Result{}, fmt.Errorf("%w: %s/%s", ErrNotFound, ch.Name, path)
	}
	if err != nil {
		return Result{}, err
	}
	c, err := cid.Decode(e.Cid)
	if err != nil {
		return Result{}, fmt.Errorf("proxy: entry %s/%s: %w", ch.Name, path, err)
	}
	return Result{CID: c, ModTime: modTime(e), Immutable: isImmutable(path)}, nil
}

// deriveGroup builds the group of anchor from the subdir's cached (or
// freshly fetched) repodata.json, stores it, and records it (for shards:
// the index and every shard) with the source's validation time, so it is
// revalidated with it. It does nothing if the group was derived from the
// same source already. It returns the ETag of the group's entries.
func (p *Proxy) deriveGroup(ctx context.Context, ch *v1.Channel, anchor, src string) (string, error) {
	srcRes, err := p.Get(ctx, ch, src)
	if err != nil {
		return "", err
	}
	tag := derivedPrefix + srcRes.CID.String()
	if ae, err := p.cat.ProxyEntry(ctx, ch.Name, anchor); err == nil && ae.Etag == tag {
		return tag, nil
	}
	srcEntry, err := p.cat.ProxyEntry(ctx, ch.Name, src)
	if err != nil {
		return "", err
	}
	release, err := p.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	subdir, file, _ := strings.Cut(anchor, "/")
	var stored map[string]store.BlobInfo
	switch file {
	case "repodata.json.zst":
		stored, err = p.putCompressed(ctx, anchor, srcRes.CID, conda.ZstdStream)
	case "repodata.json.bz2":
		stored, err = p.putCompressed(ctx, anchor, srcRes.CID, conda.Bzip2Stream)
	case "repodata.json.gz":
		stored, err = p.putCompressed(ctx, anchor, srcRes.CID, conda.GzipStream)
	default:
		stored, err = p.putFromRecords(ctx, ch, subdir, file, srcRes.CID)
	}
	if err != nil {
		return "", err
	}
	paths := make([]string, 0, len(stored))
	for fp := range stored {
		if fp != anchor {
			paths = append(paths, fp)
		}
	}
	sort.Strings(paths)
	paths = append(paths, anchor) // the anchor last, in the same command
	entries := make([]*v1.ProxyEntry, 0, len(paths))
	for _, fp := range paths {
		info := stored[fp]
		entries = append(entries, &v1.ProxyEntry{
			Channel: ch.Name, Path: fp, Cid: info.CID.String(), Etag: tag,
			LastModified: srcEntry.LastModified, ValidatedUnix: srcEntry.ValidatedUnix, Size: info.Size, Status: http.StatusOK,
		})
	}
	if err := p.record(ctx, entries...); err != nil {
		return "", err
	}
	p.log.Info("derived index files from upstream repodata", "channel", ch.Name, "path", anchor, "files", len(entries))
	return tag, nil
}

// putCompressed stores the blob src compressed, streaming: neither the
// source nor its compressed form is held whole.
func (p *Proxy) putCompressed(ctx context.Context, path string, src cid.Cid, compress func(io.Writer, io.Reader) error) (map[string]store.BlobInfo, error) {
	b, err := p.blobs.Open(ctx, src)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(compress(pw, b.Content()))
	}()
	info, err := p.blobs.Put(ctx, pr, store.PutOptions{})
	pr.CloseWithError(io.ErrClosedPipe) // stops the compressor if Put stopped early
	<-done                              // before b closes
	if err != nil {
		return nil, err
	}
	return map[string]store.BlobInfo{path: info}, nil
}

// putFromRecords stores the files of the current_repodata.json or shards
// group built from the records of the repodata.json stored as src.
func (p *Proxy) putFromRecords(ctx context.Context, ch *v1.Channel, subdir, file string, src cid.Cid) (map[string]store.BlobInfo, error) {
	raw, err := p.blobs.ReadAll(ctx, src)
	if err != nil {
		return nil, err
	}
	doc, err := conda.ParseRepodata(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s/%s/repodata.json: %v", ErrCorrupt, ch.Name, subdir, err)
	}
	recs := doc.Records()
	files := map[string][]byte{}
	if file == "current_repodata.json" {
		cur := conda.CurrentRepodata(subdir, recs)
		files[subdir+"/current_repodata.json"] = cur
		files[subdir+"/current_repodata.json.zst"] = conda.Zstd(cur)
		files[subdir+"/current_repodata.json.bz2"] = conda.Bzip2(cur)
		files[subdir+"/current_repodata.json.gz"] = conda.Gzip(cur)
	} else {
		index, shards, err := conda.Shards(subdir, recs)
		if err != nil {
			return nil, err
		}
		for h, b := range shards {
			files[subdir+"/shards/"+h+".msgpack.zst"] = b
		}
		files[subdir+"/repodata_shards.msgpack.zst"] = index
	}
	out := make(map[string]store.BlobInfo, len(files))
	for fp, b := range files {
		info, err := p.blobs.Put(ctx, bytes.NewReader(b), store.PutOptions{})
		if err != nil {
			return nil, err
		}
		out[fp] = info
	}
	return out, nil
}
