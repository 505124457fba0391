package conda

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"slices"
	"strings"
)

// CurrentCache builds current_repodata.json from a Latest filled by
// AddPair, the same bytes as Latest.CurrentRepodata, but decodes and
// encodes again only the names whose records changed since its last
// Build (the caller tells by a digest per name, NameDigest): the others'
// parts are copied from the document that Build made (the caller keeps
// it; the cache holds only where each record is in it, and the digests),
// so their candidates need not even be collected.
//
// Why: at conda-forge's size (500,000 records, 25,000 names, a 22 MB
// current_repodata.json) decoding and encoding every kept record took
// 0.7–0.9 s on one core, against 0.1 s with the cache after a one-record
// change (BenchmarkCurrentRepodataForge); it was the longest part of a
// proxy's derivation after such a change, and the shard index waited for
// it. Holding the encoded records instead would keep the document's size
// in memory for as long as the proxy runs. Not safe for concurrent use.
type CurrentCache struct {
	// names maps each name to its digest and its entries' range. After
	// each Build every string the cache holds (names, file names) is in
	// one allocation: held for hours, strings allocated one by one
	// during a derivation would each keep a page of its garbage resident.
	names   map[string]currentName
	entries []currentEntry
	// last identifies the document the entries point into (a keyed hash:
	// it tells that document from other bytes the caller might pass, at
	// ten times SHA-256's speed; the names' digests are SHA-256).
	seed maphash.Seed
	last uint64
}

// currentName is one name's part of the document: the digest of its
// records, and its entries (CurrentCache.entries[lo:hi]).
type currentName struct {
	sum    [32]byte
	lo, hi int
}

// currentEntry is one record kept: where its value is in the last
// document (off, n), or its value while a Build runs.
type currentEntry struct {
	filename string
	conda    bool
	off, n   int
	value    rawJSON
}

// rawJSON is a value already encoded (at the depth where it is written);
// jsonEncoder copies it as it is.
type rawJSON []byte

// currentDepth is the depth of a record's value in repodata.json: the
// document, then its "packages" or "packages.conda" object.
const currentDepth = 2

// ErrCurrentIncomplete is a Build given neither the candidates of a name
// nor a part of it under the same digest.
var ErrCurrentIncomplete = errors.New("conda: current_repodata.json: a name has neither candidates nor a kept part")

// Warm reports whether the cache holds the parts of a document.
func (c *CurrentCache) Warm() bool { return c.names != nil }

// Holds reports whether prev is the document the last Build returned:
// what Build needs to copy parts from it.
func (c *CurrentCache) Holds(prev []byte) bool {
	return c.names != nil && prev != nil && maphash.Bytes(c.seed, prev) == c.last
}

// Build returns current_repodata.json for subdir, and how many names it
// had to encode. names are all the names of the document, each with a
// digest of its records (the caller's: equal digests mean equal records);
// l holds the candidates (AddPair) of at least every name whose part the
// cache does not hold under that digest: without them, Build fails with
// ErrCurrentIncomplete (and drops every part kept). prev is the document
// the previous Build returned; any other bytes (nil: it is gone) drop
// every part kept.
func (c *CurrentCache) Build(subdir string, names map[string][32]byte, l *Latest, prev []byte) (doc []byte, encoded int, err error) {
	if len(l.byName) > 0 {
		return nil, 0, errors.New("conda: CurrentCache.Build of a Latest filled by Add")
	}
	if !c.Holds(prev) {
		c.names, c.entries = nil, nil
	}
	all := make([]currentEntry, 0, len(c.entries)+16)
	next := make(map[string]currentName, len(names))
	for name, sum := range names {
		lo := len(all)
		if cn, ok := c.names[name]; ok && cn.sum == sum {
			for _, e := range c.entries[cn.lo:cn.hi] {
				e.value = rawJSON(prev[e.off : e.off+e.n])
				all = append(all, e)
			}
		} else {
			lp := l.pairs[name]
			if lp == nil {
				c.names, c.entries = nil, nil // what is kept no longer matches a document
				return nil, 0, fmt.Errorf("%w: %s", ErrCurrentIncomplete, name)
			}
			all = appendCurrentName(all, lp)
			encoded++
		}
		next[name] = currentName{sum: sum, lo: lo, hi: len(all)}
	}
	order := make([]int, len(all))
	size := 256
	for i := range order {
		order[i] = i
		size += len(all[i].filename) + len(all[i].value) + 16 // indentation, quotes, colon, comma
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(all[a].filename, all[b].filename) })
	pkgs, condas := &encodedObject{}, &encodedObject{}
	for _, i := range order {
		o := pkgs
		if all[i].conda {
			o = condas
		}
		o.keys = append(o.keys, all[i].filename)
		o.values = append(o.values, all[i].value)
	}
	doc = repodataDoc(subdir, pkgs, condas, size)
	// Every entry now points into doc, the next Build's prev.
	offs := [2][]int{pkgs.offs, condas.offs}
	var at [2]int
	for _, i := range order {
		k := 0
		if all[i].conda {
			k = 1
		}
		all[i].off, all[i].n, all[i].value = offs[k][at[k]], len(all[i].value), nil
		at[k]++
	}
	c.compact(next, all)
	c.last = maphash.Bytes(c.seed, doc)
	return doc, encoded, nil
}

// compact keeps names and entries with every string in one allocation.
func (c *CurrentCache) compact(names map[string]currentName, entries []currentEntry) {
	n := 0
	for name := range names {
		n += len(name)
	}
	for _, e := range entries {
		n += len(e.filename)
	}
	var b strings.Builder
	b.Grow(n)
	type span struct{ lo, hi int }
	keys := make([]span, 0, len(names))
	vals := make([]currentName, 0, len(names))
	for name, cn := range names {
		keys = append(keys, span{b.Len(), b.Len() + len(name)})
		b.WriteString(name)
		vals = append(vals, cn)
	}
	files := make([]span, len(entries))
	for i, e := range entries {
		files[i] = span{b.Len(), b.Len() + len(e.filename)}
		b.WriteString(e.filename)
	}
	arena := b.String()
	c.names = make(map[string]currentName, len(keys))
	for i, k := range keys {
		c.names[arena[k.lo:k.hi]] = vals[i]
	}
	c.entries = slices.Clip(entries)
	for i, f := range files {
		c.entries[i].filename = arena[f.lo:f.hi]
	}
	if c.seed == (maphash.Seed{}) {
		c.seed = maphash.MakeSeed()
	}
}

// NameDigest is a digest of one name's records for Build: over each
// record in document order, its file name and the SHA-256 of its JSON
// (PairRecord.JSONSum). Not safe for concurrent use.
type NameDigest struct{ h hash.Hash }

// NewNameDigest returns an empty NameDigest.
func NewNameDigest() *NameDigest { return &NameDigest{h: sha256.New()} }

// Add adds one record.
func (d *NameDigest) Add(filename string, jsonSum [32]byte) {
	var n [binary.MaxVarintLen64]byte
	d.h.Write(n[:binary.PutUvarint(n[:], uint64(len(filename)))])
	d.h.Write([]byte(filename))
	d.h.Write(jsonSum[:])
}

// Sum returns the digest of the records added.
func (d *NameDigest) Sum() (s [32]byte) {
	d.h.Sum(s[:0])
	return s
}

// appendCurrentName appends the records CurrentRepodata keeps of one
// name's candidates, encoded. A file name is one name's (the scanner
// refuses a record whose "name" differs from its file name's), so keeping
// per name is keeping over the whole subdir.
func appendCurrentName(all []currentEntry, lp *latestPairs) []currentEntry {
	recs := make([]Record, 0, len(lp.docs))
	for i, doc := range lp.docs {
		v, _ := parseJSON(doc) // checked when offered: valid JSON of an object
		fields, _ := v.(map[string]any)
		sub, _ := fields["subdir"].(string)
		recs = append(recs, Record{Filename: lp.files[i], Subdir: sub, Fields: fields})
	}
	e := jsonEncoder{indent: true}
	start := 0
	for _, r := range latestRecords(uniqueRecords(recs)) {
		e.value(r.Fields, currentDepth)
		all = append(all, currentEntry{filename: r.Filename, conda: isConda(r.Filename), value: rawJSON(e.buf[start:len(e.buf):len(e.buf)])})
		start = len(e.buf)
	}
	return all
}

// encodedObject is a JSON object whose keys are sorted and unique and
// whose values are encoded already; writing it records in offs where each
// value begins in the output.
type encodedObject struct {
	keys   []string
	values []rawJSON
	offs   []int
}
