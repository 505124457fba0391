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
	names map[string]*currentName
	// last identifies the document the entries point into (a keyed hash:
	// it tells that document from other bytes the caller might pass, at
	// ten times SHA-256's speed; the names' digests are SHA-256).
	seed maphash.Seed
	last uint64
}

// currentName is one name's part of the document: its records kept, and
// the digest of the candidates they were made from.
type currentName struct {
	sum     [32]byte
	entries []currentEntry
}

// currentEntry is one record kept: where its value is in the last
// document (off, n), or its value encoded by this Build.
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
// ErrCurrentIncomplete. prev is the document the previous Build returned;
// any other bytes (nil: it is gone) drop every part kept.
func (c *CurrentCache) Build(subdir string, names map[string][32]byte, l *Latest, prev []byte) (doc []byte, encoded int, err error) {
	if len(l.byName) > 0 {
		return nil, 0, errors.New("conda: CurrentCache.Build of a Latest filled by Add")
	}
	if !c.Holds(prev) {
		c.names = map[string]*currentName{}
		c.seed = maphash.MakeSeed()
	}
	total := 0
	for name, sum := range names {
		cn := c.names[name]
		if cn == nil || cn.sum != sum {
			lp := l.pairs[name]
			if lp == nil {
				c.names = nil // what is kept no longer matches a document
				return nil, 0, fmt.Errorf("%w: %s", ErrCurrentIncomplete, name)
			}
			cn = encodeCurrentName(lp, sum)
			c.names[name] = cn
			encoded++
		}
		total += len(cn.entries)
	}
	entries := make([]*currentEntry, 0, total)
	size := 256
	for name, cn := range c.names {
		if _, ok := names[name]; !ok {
			delete(c.names, name)
			continue
		}
		for i := range cn.entries {
			e := &cn.entries[i]
			if e.value == nil {
				e.value = rawJSON(prev[e.off : e.off+e.n])
			}
			entries = append(entries, e)
			size += len(e.filename) + len(e.value) + 16 // indentation, quotes, colon, comma
		}
	}
	slices.SortFunc(entries, func(a, b *currentEntry) int { return strings.Compare(a.filename, b.filename) })
	pkgs, condas := &encodedObject{}, &encodedObject{}
	for _, e := range entries {
		o := pkgs
		if e.conda {
			o = condas
		}
		o.keys = append(o.keys, e.filename)
		o.values = append(o.values, e.value)
	}
	doc = repodataDoc(subdir, pkgs, condas, size)
	// Every entry now points into doc, the next Build's prev.
	offs := [2][]int{pkgs.offs, condas.offs}
	var next [2]int
	for _, e := range entries {
		i := 0
		if e.conda {
			i = 1
		}
		e.off, e.n, e.value = offs[i][next[i]], len(e.value), nil
		next[i]++
	}
	c.last = maphash.Bytes(c.seed, doc)
	return doc, encoded, nil
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

// encodeCurrentName encodes the records CurrentRepodata keeps of one
// name's candidates. A file name is one name's (the scanner refuses a
// record whose "name" differs from its file name's), so keeping per name
// is keeping over the whole subdir.
func encodeCurrentName(lp *latestPairs, sum [32]byte) *currentName {
	recs := make([]Record, 0, len(lp.docs))
	for i, doc := range lp.docs {
		v, _ := parseJSON(doc) // checked when offered: valid JSON of an object
		fields, _ := v.(map[string]any)
		sub, _ := fields["subdir"].(string)
		recs = append(recs, Record{Filename: lp.files[i], Subdir: sub, Fields: fields})
	}
	kept := latestRecords(uniqueRecords(recs))
	cn := &currentName{sum: sum, entries: make([]currentEntry, len(kept))}
	e := jsonEncoder{indent: true}
	start := 0
	for i, r := range kept {
		e.value(r.Fields, currentDepth)
		cn.entries[i] = currentEntry{filename: r.Filename, conda: isConda(r.Filename), value: rawJSON(e.buf[start:len(e.buf):len(e.buf)])}
		start = len(e.buf)
	}
	return cn
}

// encodedObject is a JSON object whose keys are sorted and unique and
// whose values are encoded already; writing it records in offs where each
// value begins in the output.
type encodedObject struct {
	keys   []string
	values []rawJSON
	offs   []int
}
