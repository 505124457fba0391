package store

import (
	"sync"

	"github.com/ipfs/go-cid"
)

// hotBlobs keeps the bytes of recently opened inline blobs (indexes, shards,
// small packages: what conda clients ask for most), so serving them does
// not go through Pebble's read path each time. Blobs are content-addressed,
// so an entry can never be stale; Delete drops it. It holds two
// generations of up to half its budget each: a full current generation
// becomes the old one (the one before is dropped), and a hit in the old
// generation moves the entry back to the current one: an LRU
// approximation with O(1) work and no per-entry bookkeeping.
type hotBlobs struct {
	mu       sync.RWMutex
	cur, old map[cid.Cid]hotBlob
	curBytes int64
	budget   int64 // per generation
}

type hotBlob struct {
	info BlobInfo
	data []byte
}

func newHotBlobs(budget int64) *hotBlobs {
	return &hotBlobs{cur: map[cid.Cid]hotBlob{}, old: map[cid.Cid]hotBlob{}, budget: budget / 2}
}

func (h *hotBlobs) get(c cid.Cid) (hotBlob, bool) {
	h.mu.RLock()
	b, ok := h.cur[c]
	h.mu.RUnlock()
	if ok || h.budget <= 0 {
		return b, ok
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if b, ok = h.old[c]; ok {
		delete(h.old, c)
		h.addLocked(c, b)
	}
	return b, ok
}

func (h *hotBlobs) add(c cid.Cid, b hotBlob) {
	if int64(len(b.data)) > h.budget {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.cur[c]; !ok {
		h.addLocked(c, b)
	}
}

func (h *hotBlobs) addLocked(c cid.Cid, b hotBlob) {
	if h.curBytes+int64(len(b.data)) > h.budget {
		h.old, h.cur, h.curBytes = h.cur, map[cid.Cid]hotBlob{}, 0
	}
	h.cur[c] = b
	h.curBytes += int64(len(b.data))
}

func (h *hotBlobs) remove(c cid.Cid) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if b, ok := h.cur[c]; ok {
		h.curBytes -= int64(len(b.data))
		delete(h.cur, c)
	}
	delete(h.old, c)
}
