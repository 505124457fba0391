package proxy

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"github.com/ipfs/go-cid"
)

// want is what the upstream repodata says a package file is: the blob its
// sha256 names, and its size.
type want struct {
	cid  cid.Cid
	size int64
}

// packageRecord returns the record the proxy's current copy of the
// subdir's repodata.json (fetched first if there is none) has for the
// package file path. A file it does not list, or lists without a valid
// sha256 and a size, is not found: its bytes could not be checked.
func (p *Proxy) packageRecord(ctx context.Context, ch *v1.Channel, path string) (want, error) {
	subdir, fn, _ := strings.Cut(path, "/")
	idx, err := p.Get(ctx, ch, subdir+"/repodata.json")
	if err != nil {
		return want{}, fmt.Errorf("record of %s: %w", path, err)
	}
	set, err := p.records(ctx, idx.CID)
	if err != nil {
		return want{}, fmt.Errorf("record of %s: %w", path, err)
	}
	w, ok := set[fn]
	if !ok {
		return want{}, fmt.Errorf("%w: %s/%s is not in the upstream repodata.json", ErrNotFound, ch.Name, path)
	}
	return w, nil
}

// records returns the package records of the repodata.json stored as blob
// c, parsing it (once however many ask, and within Config.Derivations)
// unless it is cached.
func (p *Proxy) records(ctx context.Context, c cid.Cid) (map[string]want, error) {
	if rs, ok := p.sets.get(c); ok {
		return rs.m, rs.err
	}
	v, err, _ := p.sf.Do("records\x00"+c.KeyString(), func() (any, error) {
		ctx := context.WithoutCancel(ctx) // shared by every caller waiting on it
		if rs, ok := p.sets.get(c); ok {
			return rs, nil
		}
		release, err := p.acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
		rs, err := p.parseRecords(ctx, c)
		if err != nil {
			return nil, err
		}
		p.sets.put(c, rs)
		return rs, nil
	})
	if err != nil {
		return nil, err
	}
	rs := v.(*recordSet)
	return rs.m, rs.err
}

// parseRecords reads the package records of a stored repodata.json. A
// document that does not parse gives a set whose err is ErrCorrupt (kept
// like any other, so that it is not parsed again for every request).
func (p *Proxy) parseRecords(ctx context.Context, c cid.Cid) (*recordSet, error) {
	info, err := p.blobs.Stat(ctx, c)
	if err != nil {
		return nil, err
	}
	if info.Size > p.cfg.MaxIndexSize {
		return &recordSet{err: fmt.Errorf("%w: repodata.json of %d bytes", ErrTooLarge, info.Size)}, nil
	}
	raw, err := p.blobs.ReadAll(ctx, c)
	if err != nil {
		return nil, err
	}
	m := map[string]want{}
	_, err = conda.ScanRepodata(raw, func(r conda.Record) error {
		h, _ := r.Fields["sha256"].(string)
		sum, err := hex.DecodeString(h)
		size, ok := fieldInt(r.Fields["size"])
		if err != nil || len(sum) != 32 || !ok || size <= 0 {
			return nil // unverifiable: left out
		}
		c, err := store.CIDFromSHA256(sum)
		if err != nil {
			return nil
		}
		m[r.Filename] = want{cid: c, size: size}
		return nil
	})
	if errors.Is(err, conda.ErrBadRepodata) {
		return &recordSet{err: fmt.Errorf("%w: repodata.json %s: %v", ErrCorrupt, c, err)}, nil
	}
	if err != nil {
		return nil, err
	}
	return &recordSet{m: m}, nil
}

func fieldInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case float64:
		return int64(n), true
	case interface{ Int64() (int64, error) }:
		i, err := n.Int64()
		return i, err == nil
	}
	return 0, false
}

// recordSet is the package records of one repodata.json, or why it has
// none.
type recordSet struct {
	m    map[string]want
	err  error
	used atomic.Uint64 // recordSets.clock at the last use
}

// recordSets caches recordSets by the CID of their repodata.json, at most
// max records over all of them (the least recently used sets go first;
// one larger set is kept alone). Safe for concurrent use.
type recordSets struct {
	max int

	clock atomic.Uint64

	mu    sync.RWMutex
	sets  map[cid.Cid]*recordSet
	total int
}

func newRecordSets(max int) *recordSets {
	return &recordSets{max: max, sets: map[cid.Cid]*recordSet{}}
}

func (r *recordSets) get(c cid.Cid) (*recordSet, bool) {
	r.mu.RLock()
	rs, ok := r.sets[c]
	r.mu.RUnlock()
	if ok {
		rs.used.Store(r.clock.Add(1))
	}
	return rs, ok
}

func (r *recordSets) put(c cid.Cid, rs *recordSet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.sets[c]; ok {
		delete(r.sets, c)
		r.total -= len(old.m)
	}
	for len(r.sets) > 0 && r.total+len(rs.m) > r.max {
		var lru cid.Cid
		var oldest *recordSet
		for k, s := range r.sets {
			if oldest == nil || s.used.Load() < oldest.used.Load() {
				lru, oldest = k, s
			}
		}
		delete(r.sets, lru)
		r.total -= len(oldest.m)
	}
	rs.used.Store(r.clock.Add(1))
	r.sets[c] = rs
	r.total += len(rs.m)
}
