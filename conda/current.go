package conda

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"slices"
	"strings"
)

// CurrentCache builds current_repodata.json from a Latest filled by
// AddPair, the same bytes as Latest.CurrentRepodata, but decodes and
// encodes again only the names whose candidates changed since its last
// Build: the others' records are copied from the document that Build made
// (the caller keeps it; the cache holds only where each record is in it,
// and a digest per name).
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

// Build returns current_repodata.json for subdir of what l was offered,
// and how many names it had to encode. prev is the document the previous
// Build returned; any other bytes (nil: it is gone) make Build encode
// every name. A Latest filled by Add is built afresh
// (Latest.CurrentRepodata).
func (c *CurrentCache) Build(subdir string, l *Latest, prev []byte) (doc []byte, encoded int) {
	if len(l.byName) > 0 {
		c.names = nil
		return l.CurrentRepodata(subdir), len(l.byName)
	}
	if c.names == nil || prev == nil || maphash.Bytes(c.seed, prev) != c.last {
		c.names = map[string]*currentName{}
		c.seed = maphash.MakeSeed()
	}
	h := sha256.New()
	var sum [32]byte
	var n [binary.MaxVarintLen64]byte
	total := 0
	for name, lp := range l.pairs {
		// The digest covers everything the name's part depends on: its
		// candidates' file names and JSON, in the order offered.
		h.Reset()
		for i, fn := range lp.files {
			h.Write(n[:binary.PutUvarint(n[:], uint64(len(fn)))])
			h.Write([]byte(fn))
			h.Write(n[:binary.PutUvarint(n[:], uint64(len(lp.docs[i])))])
			h.Write(lp.docs[i])
		}
		h.Sum(sum[:0])
		cn := c.names[name]
		if cn == nil || cn.sum != sum {
			cn = encodeCurrentName(lp, sum)
			c.names[name] = cn
			encoded++
		}
		total += len(cn.entries)
	}
	entries := make([]*currentEntry, 0, total)
	size := 256
	for name, cn := range c.names {
		if l.pairs[name] == nil {
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
	var offs [2][]int
	for i, o := range []*encodedObject{pkgs, condas} {
		offs[i] = o.offs
	}
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
	return doc, encoded
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
