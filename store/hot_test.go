package store

import (
	"fmt"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

func testCID(t *testing.T, i int) cid.Cid {
	t.Helper()
	h, err := multihash.Sum([]byte(fmt.Sprint(i)), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// TestHotBlobsBoundedLRU: the cache never holds more than its budget, keeps
// what is used, forgets what is not, and forgets deleted blobs at once.
func TestHotBlobsBoundedLRU(t *testing.T) {
	h := newHotBlobs(4000) // two generations of 2000 bytes
	blob := func(i int) hotBlob { return hotBlob{info: BlobInfo{Size: 500}, data: make([]byte, 500)} }
	keep := testCID(t, -1)
	h.add(keep, blob(-1))
	for i := range 100 {
		h.add(testCID(t, i), blob(i))
		if _, ok := h.get(keep); !ok {
			t.Fatalf("a blob read after every add was evicted after add %d", i)
		}
		var total int64
		for _, m := range []map[cid.Cid]hotBlob{h.cur, h.old} {
			for _, b := range m {
				total += int64(len(b.data))
			}
		}
		if total > 4000 {
			t.Fatalf("cache holds %d bytes, budget 4000", total)
		}
	}
	if _, ok := h.get(testCID(t, 0)); ok {
		t.Error("a blob added long ago and never read is still cached")
	}
	if _, ok := h.get(testCID(t, 99)); !ok {
		t.Error("the last blob added is not cached")
	}
	h.remove(keep)
	if _, ok := h.get(keep); ok {
		t.Error("a removed blob is still cached")
	}
	h.add(testCID(t, 1000), hotBlob{data: make([]byte, 2001)})
	if _, ok := h.get(testCID(t, 1000)); ok {
		t.Error("a blob larger than a generation was cached")
	}
}
