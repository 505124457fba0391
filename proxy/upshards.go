package proxy

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"path"
	"strings"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/ipfs/go-cid"
)

// Package records from the upstream's shards. An upstream that publishes
// sharded repodata (CEP-16; conda-forge does) is passed through to shard
// clients, and a package file's record is then read from the upstream's
// shard of its name: the proxy's copy of the upstream shard index names
// the shard, which is fetched (and kept, it is immutable) like any shard
// a client asks for. The whole upstream repodata.json, 315 MB for
// conda-forge's linux-64, is then never downloaded nor scanned for a
// package: a cold package waits for one small shard, not for the index.
// A shard whose bytes do not hash to its name, a name the index does not
// have, or a file its shard does not list falls back to the derived set
// of the upstream repodata.json (derived.go), as do upstreams without
// shards.
//
// A shard client and a repodata.json client see the upstream's two
// documents as they were when each was cached; a package the upstream
// replaced under the same name between the two (conda-forge never does)
// is served as the shard says.

// upIndex is an upstream shard index, decoded (or why it could not be).
type upIndex struct {
	src     cid.Cid
	digests map[string][32]byte
	base    string // info.shards_base_url
	err     error  // kept too: an unreadable index is not decoded again
}

// Bounds of the upstream shard indexes kept decoded: how many (one per
// channel and subdir) and how large each may decode (conda-forge's
// linux-64: 1.2 MB, its digests map about 3 MB), so that all of them hold
// at most a few hundred MB whatever an upstream sends.
const (
	upIndexesMax   = 4
	upIndexMaxSize = 32 << 20
)

// UpstreamShardLookups counts the package records read from upstream
// shards (tests and metrics).
func (p *Proxy) UpstreamShardLookups() uint64 { return p.upShardHits.Load() }

// upstreamShardEntry returns what the upstream's shard of fn's name says
// of fn, when the upstream publishes shards for subdir (its shard index is
// cached) and that shard lists fn with a valid sha256 and size. ok false
// means: ask the derived set.
func (p *Proxy) upstreamShardEntry(ctx context.Context, ch *v1.Channel, subdir, name, fn string) (w want, ok bool, err error) {
	indexPath := subdir + "/" + fileShardIndex
	e, err := p.cat.ProxyEntry(ctx, ch.Name, indexPath)
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && (e.Status != http.StatusOK || strings.HasPrefix(e.Etag, legacyDerivedPrefix))) {
		return want{}, false, nil // not known to be published upstream
	}
	if err != nil {
		return want{}, false, err
	}
	res, err := p.getIndex(ctx, ch, indexPath)
	if err != nil {
		p.log.Debug("upstream shard index", "channel", ch.Name, "subdir", subdir, "err", err)
		return want{}, false, nil
	}
	idx := p.upstreamIndex(ctx, ch, subdir, res.CID)
	if err := idx.err; err != nil {
		p.log.Warn("upstream shard index unreadable: package records come from repodata.json", "channel", ch.Name, "subdir", subdir, "err", err)
		return want{}, false, nil
	}
	sum, ok := idx.digests[name]
	if !ok {
		return want{}, false, nil
	}
	shardPath := upShardPath(subdir, idx.base, sum)
	if shardPath == "" {
		return want{}, false, nil // outside the channel: not fetched through it
	}
	sres, err := p.getIndex(ctx, ch, shardPath)
	if err != nil {
		p.log.Debug("upstream shard", "channel", ch.Name, "path", shardPath, "err", err)
		return want{}, false, nil
	}
	if !sres.CID.Equals(shardCID(sum)) {
		p.log.Warn("upstream shard does not hash to its name: package records come from repodata.json", "channel", ch.Name, "path", shardPath)
		return want{}, false, nil
	}
	b, err := p.blobs.ReadAll(ctx, sres.CID)
	if err != nil {
		return want{}, false, err
	}
	se, ok, err := conda.ShardEntryOf(b, fn) // an upstream's shard: not kept decoded
	if err != nil {
		p.log.Warn("upstream shard unreadable: package records come from repodata.json", "channel", ch.Name, "path", shardPath, "err", err)
		return want{}, false, nil
	}
	if !ok {
		return want{}, false, nil
	}
	if w, ok = entryWant(se); ok {
		p.upShardHits.Add(1)
	}
	return w, ok, nil
}

// upstreamIndex returns the upstream shard index stored as src, decoded
// once however many ask (an index that cannot be read is remembered as
// such; a store error is not).
func (p *Proxy) upstreamIndex(ctx context.Context, ch *v1.Channel, subdir string, src cid.Cid) upIndex {
	k := key(ch.Name, subdir)
	p.setsMu.Lock()
	idx, ok := p.upIndexes[k]
	p.setsMu.Unlock()
	if ok && idx.src.Equals(src) {
		return idx
	}
	v, err, _ := p.sf.Do("upindex\x00"+src.String(), func() (any, error) {
		b, err := p.blobs.ReadAll(context.WithoutCancel(ctx), src) // others may wait on it
		if err != nil {
			return nil, err
		}
		d, base, err := conda.ShardIndexDigestsMax(b, upIndexMaxSize)
		return upIndex{src: src, digests: d, base: base, err: err}, nil
	})
	if err != nil {
		return upIndex{src: src, err: err}
	}
	idx = v.(upIndex)
	p.setsMu.Lock()
	putBounded(p.upIndexes, k, idx, upIndexesMax)
	p.setsMu.Unlock()
	return idx
}

// upShardPath is where an upstream shard index whose shards_base_url is
// base puts the shard of sum, as a path of the channel: "./shards/"
// (rattler-index), "" (conda-index: beside the index) or another
// directory of the subdir. "" when base leaves the subdir or is a URL of
// its own (its shards are not fetched through the channel).
func upShardPath(subdir, base string, sum [32]byte) string {
	if strings.ContainsAny(base, ":?#\\") || strings.HasPrefix(base, "/") {
		return ""
	}
	if base != "" && !strings.HasSuffix(base, "/") {
		base += "/" // a directory, as clients read it
	}
	p := path.Clean(subdir + "/" + base + hex.EncodeToString(sum[:]) + shardSuffix)
	if !strings.HasPrefix(p, subdir+"/") || checkPath(p) != nil {
		return "" // only what a client could ask for is fetched and recorded
	}
	return p
}

// namedBySHA256 returns the SHA-256 a file's name gives its bytes: a
// shard, named <sha256 hex>.msgpack.zst wherever it is.
func namedBySHA256(file string) ([32]byte, bool) {
	return shardSum(shardsDir + path.Base(file))
}
