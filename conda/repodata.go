package conda

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"
)

// zstdLevel is the fixed level of every zstd stream this package writes.
// SpeedBestCompression (klauspost's strongest level, in the range of
// zstd -11 and up) compresses a synthetic 10,000-record repodata.json
// (5.8 MB) in about 0.2 s on the 2-core reference machine, about 5% smaller
// than SpeedDefault, whose speed is not needed. With the encoder's
// low-memory mode a one-off call costs about 1 ms of setup. Output for a
// given input is deterministic for a given klauspost/compress version.
const zstdLevel = zstd.SpeedBestCompression

// bzip2Level is the level of every bzip2 stream this package writes.
const bzip2Level = 9

// gzipLevel is the level of every gzip stream this package writes. On a
// synthetic 10,000-record repodata.json (5.8 MB) level 6 takes about
// 80 ms for 0.4% more bytes than level 9, which takes 0.6 s.
const gzipLevel = gzip.DefaultCompression

// Repodata returns repodata.json for subdir: "info" (with "subdir"),
// "packages" (.tar.bz2 records), "packages.conda" (.conda records),
// "removed" (empty) and "repodata_version" 1, indented JSON with sorted
// keys and a trailing newline. No base_url is written. The output depends
// only on the set of records, not their order. Records whose Filename does
// not parse are left out; if a file name appears more than once, one copy
// is chosen deterministically.
func Repodata(subdir string, recs []Record) []byte {
	pkgs, condas := map[string]any{}, map[string]any{}
	for _, r := range uniqueRecords(recs) {
		if isConda(r.Filename) {
			condas[r.Filename] = r.Fields
		} else {
			pkgs[r.Filename] = r.Fields
		}
	}
	return repodataDoc(subdir, pkgs, condas, 0)
}

// repodataDoc writes repodata.json of its two package objects (maps of
// record fields, or encodedObjects) into a buffer of sizeHint bytes.
func repodataDoc(subdir string, pkgs, condas any, sizeHint int) []byte {
	doc := map[string]any{
		"info":             map[string]any{"subdir": subdir},
		"packages":         pkgs,
		"packages.conda":   condas,
		"removed":          []any{},
		"repodata_version": 1,
	}
	return append(appendJSON(make([]byte, 0, sizeHint), doc, true), '\n')
}

// CurrentRepodata returns current_repodata.json for subdir: the same
// schema as Repodata, restricted for each package name to the records of
// its latest version (CompareVersions) with the highest build number among
// that version. All records tied on version and build number are kept, so
// every build variant (for example one per Python version) and both the
// .conda and .tar.bz2 forms survive.
//
// Simplification: conda-index also adds older records needed to satisfy
// the dependencies of the kept ones. Keeping the latest of every name
// already provides a candidate for every dependency name present in the
// subdir, so no dependency closure is computed; clients fall back to
// repodata.json when the current set cannot be solved.
func CurrentRepodata(subdir string, recs []Record) []byte {
	return Repodata(subdir, latestRecords(uniqueRecords(recs)))
}

// Latest collects, record by record, what CurrentRepodata keeps: per
// name, the records tied for the latest version and build number. It holds
// only those, not every record it is given.
type Latest struct {
	byName map[string][]Record
	// pairs are the candidates offered by AddPair, kept as JSON.
	pairs   map[string]*latestPairs
	scratch parsedVersion
}

// latestPairs are one name's records tied for latest, as AddPair got them.
type latestPairs struct {
	version     string
	parsed      parsedVersion
	buildNumber int64
	files       []string
	docs        [][]byte
}

// Add offers one record.
func (l *Latest) Add(r Record) {
	if l.byName == nil {
		l.byName = map[string][]Record{}
	}
	name := r.Name()
	cur := l.byName[name]
	if len(cur) > 0 {
		c := CompareVersions(r.Version(), cur[0].Version())
		if c == 0 {
			c = cmp.Compare(r.BuildNumber(), cur[0].BuildNumber())
		}
		switch {
		case c < 0:
			return
		case c == 0:
			l.byName[name] = append(cur, r)
			return
		}
	}
	l.byName[name] = append(cur[:0], r)
}

// AddPair offers one record as ScanShardPairs gives it (Add's choice,
// without the record's field map unless it is kept). Only one of Add and
// AddPair may be used on a Latest.
func (l *Latest) AddPair(r *PairRecord) {
	if l.pairs == nil {
		l.pairs = map[string]*latestPairs{}
	}
	cur := l.pairs[r.Name]
	if cur != nil {
		c := 0
		if string(r.Version) != cur.version {
			parseVersionInto(&l.scratch, string(r.Version))
			c = compareParsed(l.scratch, cur.parsed)
		}
		if c == 0 {
			c = cmp.Compare(r.BuildNumber, cur.buildNumber)
		}
		switch {
		case c < 0:
			return
		case c == 0:
			cur.files = append(cur.files, r.Filename)
			cur.docs = append(cur.docs, bytes.Clone(r.JSON))
			return
		}
	} else {
		cur = &latestPairs{}
		l.pairs[r.Name] = cur
	}
	cur.version = string(r.Version)
	parseVersionInto(&cur.parsed, cur.version)
	cur.buildNumber = r.BuildNumber
	cur.files = append(cur.files[:0], r.Filename)
	cur.docs = append(cur.docs[:0], bytes.Clone(r.JSON))
}

// CurrentRepodata returns current_repodata.json of the records offered:
// the same bytes as CurrentRepodata of all of them.
func (l *Latest) CurrentRepodata(subdir string) []byte {
	var recs []Record
	for _, rs := range l.byName {
		recs = append(recs, rs...)
	}
	for _, lp := range l.pairs {
		for i, doc := range lp.docs {
			// Checked when offered: valid JSON of an object.
			v, _ := parseJSON(doc)
			fields, _ := v.(map[string]any)
			sub, _ := fields["subdir"].(string)
			recs = append(recs, Record{Filename: lp.files[i], Subdir: sub, Fields: fields})
		}
	}
	return CurrentRepodata(subdir, recs)
}

// latestRecords keeps, per name, the records tied for the latest version
// and build number.
func latestRecords(recs []Record) []Record {
	best := map[string]Record{}
	for _, r := range recs {
		name := r.Name()
		if b, ok := best[name]; !ok || compareRecords(r, b) > 0 {
			best[name] = r
		}
	}
	var out []Record
	for _, r := range recs {
		b := best[r.Name()]
		if CompareVersions(r.Version(), b.Version()) == 0 && r.BuildNumber() == b.BuildNumber() {
			out = append(out, r)
		}
	}
	return out
}

// uniqueRecords drops records with unparsable file names, resolves
// duplicate file names deterministically (the copy whose compact JSON
// sorts first wins) and returns the result sorted by file name.
func uniqueRecords(recs []Record) []Record {
	byName := make(map[string]Record, len(recs))
	for _, r := range recs {
		if _, err := ParseFilename(r.Filename); err != nil {
			continue
		}
		if prev, ok := byName[r.Filename]; ok {
			if bytes.Compare(EncodeRecordFields(prev.Fields), EncodeRecordFields(r.Fields)) <= 0 {
				continue
			}
		}
		byName[r.Filename] = r
	}
	out := make([]Record, 0, len(byName))
	for _, k := range sortedKeys(byName) {
		out = append(out, byName[k])
	}
	return out
}

func isConda(fn string) bool { return strings.HasSuffix(fn, ExtConda) }

// zstdEncoders recycles encoders: one at the best level holds tens of
// megabytes of match tables, and an index rebuild compresses several
// documents and every shard. EncodeAll starts each frame afresh, so a
// reused encoder gives the same bytes as a new one.
var zstdEncoders = sync.Pool{New: func() any { return newZstdEncoder() }}

// newZstdEncoder returns an encoder with the fixed settings used for all
// output. The options are constant, so construction cannot fail.
func newZstdEncoder() *zstd.Encoder {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstdLevel),
		zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderCRC(true))
	if err != nil {
		panic("conda: zstd encoder: " + err.Error())
	}
	return enc
}

// Zstd compresses b as a single zstd frame (with content size and
// checksum) at a fixed level. The same input always gives the same bytes.
func Zstd(b []byte) []byte {
	enc := zstdEncoders.Get().(*zstd.Encoder)
	defer zstdEncoders.Put(enc)
	return enc.EncodeAll(b, nil)
}

// ZstdStream writes what r yields to w compressed with Zstd's settings,
// holding only the encoder's window, not the input. The frame carries no
// content size, so its bytes differ from Zstd's; it decodes the same.
func ZstdStream(w io.Writer, r io.Reader) error {
	enc := zstdEncoders.Get().(*zstd.Encoder)
	defer zstdEncoders.Put(enc)
	enc.Reset(w)
	if _, err := io.Copy(enc, r); err != nil {
		enc.Reset(nil)
		return err
	}
	return enc.Close()
}

// WholeZstd is how a whole repodata.json of any size is compressed when
// the proxy derives it, and its shards: SpeedFastest. Measured on a
// generated 290 MiB conda-forge-sized linux-64 index (conda/forgegen,
// 500,000 records) on the 2-core reference machine, one stream with the
// encoder's low-memory mode: SpeedFastest 1.86 s to 43.6 MB, SpeedDefault
// 3.26 s to 46.9 MB, SpeedBetterCompression 8.33 s to 44.5 MB,
// SpeedBestCompression 23.1 s to 43.6 MB. The index's long repeated field
// names and values leave nothing for the slower levels to win here.
const WholeZstd = zstd.SpeedFastest

// FastZstd is the level of a .zst streamed to a client while the stored
// one is not derived yet: the fastest, so the client's first bytes come at
// once and the stream keeps ahead of a fast link.
const FastZstd = zstd.SpeedFastest

// ZstdStreamLevel is ZstdStream at another level (WholeZstd, FastZstd).
// Deterministic for a given level and klauspost/compress version.
func ZstdStreamLevel(w io.Writer, r io.Reader, level zstd.EncoderLevel) error {
	enc, err := zstd.NewWriter(w,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderCRC(true))
	if err != nil {
		return err
	}
	if _, err := io.Copy(enc, r); err != nil {
		enc.Reset(nil)
		return err
	}
	return enc.Close()
}

// Bzip2Stream writes what r yields to w compressed as Bzip2 does, holding
// only a block at a time.
func Bzip2Stream(w io.Writer, r io.Reader) error {
	bw, err := bzip2.NewWriter(w, &bzip2.WriterConfig{Level: bzip2Level})
	if err != nil {
		return err
	}
	if _, err := io.Copy(bw, r); err != nil {
		return err
	}
	return bw.Close()
}

// Gzip compresses b as one gzip member at a fixed level, with no name, no
// modification time and no OS byte in its header, so the same input always
// gives the same bytes (for a given Go release): every node of a cluster
// serves identical bytes under the same ETag.
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	if err := GzipStream(&buf, bytes.NewReader(b)); err != nil {
		panic("conda: gzip: " + err.Error()) // a constant level into a bytes.Buffer cannot fail
	}
	return buf.Bytes()
}

// GzipStream writes what r yields to w as Gzip does (the same bytes for
// the same input), holding only the compressor's window.
func GzipStream(w io.Writer, r io.Reader) error {
	zw, err := gzip.NewWriterLevel(w, gzipLevel)
	if err != nil {
		return err
	}
	zw.OS = 255 // unknown: no trace of the build platform
	if _, err := io.Copy(zw, r); err != nil {
		return err
	}
	return zw.Close()
}

// Bzip2 compresses b with bzip2 at level 9. The same input always gives
// the same bytes.
func Bzip2(b []byte) []byte {
	var buf bytes.Buffer
	if err := Bzip2Stream(&buf, bytes.NewReader(b)); err != nil {
		// Only an invalid level or a failing writer can cause this, and
		// neither is possible with a constant level and a bytes.Buffer.
		panic("conda: bzip2: " + err.Error())
	}
	return buf.Bytes()
}

// Shards returns sharded repodata (CEP-16) for subdir. index is
// repodata_shards.msgpack.zst; shards maps the lowercase hex SHA-256 of
// each compressed shard to its bytes, to be served as
// shards/<hex>.msgpack.zst.
//
// There is one shard per package name, a zstd-compressed msgpack map with
// "packages", "packages.conda" (both always present, possibly empty) and
// "removed" (empty). Shard records are the repodata records with md5 and
// sha256 as raw bytes (msgpack bin) instead of hex. The index is a map
// with "info" (subdir, base_url "", shards_base_url "./shards/"),
// "version" 1 and "shards", mapping each name to the raw 32-byte SHA-256
// of its compressed shard. Maps are written with sorted keys, so the
// output depends only on the set of records. A record with a malformed md5
// or sha256 is an error.
func Shards(subdir string, recs []Record) (index []byte, shards map[string][]byte, err error) {
	byName := map[string][]Record{}
	for _, r := range uniqueRecords(recs) {
		byName[r.Name()] = append(byName[r.Name()], r)
	}
	// One encoder for every shard: SpeedBestCompression's tables are tens
	// of megabytes, and sync.Pool may hand out a new one each time (it
	// drops items on purpose under the race detector).
	enc := zstdEncoders.Get().(*zstd.Encoder)
	defer zstdEncoders.Put(enc)
	shards = make(map[string][]byte, len(byName))
	digests := make(map[string][]byte, len(byName))
	var raw []byte
	for _, name := range sortedKeys(byName) {
		var pkgs, condas [][]byte
		for _, r := range byName[name] { // sorted by file name
			pair, err := AppendShardPair(nil, r)
			if err != nil {
				return nil, nil, err
			}
			if isConda(r.Filename) {
				condas = append(condas, pair)
			} else {
				pkgs = append(pkgs, pair)
			}
		}
		raw = AppendShard(raw[:0], pkgs, condas)
		comp := enc.EncodeAll(raw, nil)
		sum := sha256.Sum256(comp)
		shards[hex.EncodeToString(sum[:])] = comp
		digests[name] = sum[:]
	}
	index, err = ShardIndex(subdir, digests)
	return index, shards, err
}

// AppendShardPair appends one record's entry in its name's shard: the
// MessagePack of its file name, then of its fields with md5 and sha256 as
// raw bytes. A malformed md5 or sha256 is an error.
func AppendShardPair(dst []byte, r Record) ([]byte, error) {
	f, err := shardFields(r)
	if err != nil {
		return nil, err
	}
	dst = appendMsgpackString(dst, r.Filename)
	if dst, err = appendMsgpack(dst, f); err != nil {
		return nil, fmt.Errorf("conda: shard record %s: %w", r.Filename, err)
	}
	return dst, nil
}

// AppendShard appends the raw (uncompressed) shard of one package name
// made of the AppendShardPair entries of its .tar.bz2 and .conda records,
// each list sorted by file name: the same bytes Shards compresses. Zstd
// of it is the shard file, named by its SHA-256.
func AppendShard(dst []byte, pkgs, condas [][]byte) []byte {
	dst = appendMsgpackLen(dst, 3, 0x80, 0xde, 0xdf) // keys in byte order:
	dst = appendMsgpackString(dst, "packages")
	dst = appendMsgpackLen(dst, len(pkgs), 0x80, 0xde, 0xdf)
	for _, p := range pkgs {
		dst = append(dst, p...)
	}
	dst = appendMsgpackString(dst, "packages.conda")
	dst = appendMsgpackLen(dst, len(condas), 0x80, 0xde, 0xdf)
	for _, p := range condas {
		dst = append(dst, p...)
	}
	dst = appendMsgpackString(dst, "removed")
	return appendMsgpackLen(dst, 0, 0x90, 0xdc, 0xdd)
}

// ShardIndex returns the compressed CEP-16 shard index of subdir: each
// package name mapped to the raw 32-byte SHA-256 of its shard file.
func ShardIndex(subdir string, digests map[string][]byte) ([]byte, error) {
	shards := make(map[string]any, len(digests))
	for name, d := range digests {
		shards[name] = d
	}
	doc := map[string]any{
		"info": map[string]any{
			"base_url":        "",
			"shards_base_url": "./shards/",
			"subdir":          subdir,
		},
		"shards":  shards,
		"version": 1,
	}
	raw, err := appendMsgpack(nil, doc)
	if err != nil {
		return nil, fmt.Errorf("conda: shard index: %w", err)
	}
	enc := shardIndexEncoders.Get().(*zstd.Encoder)
	defer shardIndexEncoders.Put(enc)
	return enc.EncodeAll(raw, nil), nil
}

// shardIndexEncoders compress shard indexes at SpeedDefault, not Zstd's
// SpeedBestCompression: an index is mostly SHA-256 digests, which no level
// compresses. For 25,000 names (conda-forge's linux-64) best took 232 ms
// for 874 KB, default 25 ms for 885 KB, on the 2-core reference machine;
// the index is what a client of a new set waits for.
var shardIndexEncoders = sync.Pool{New: func() any {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(true))
	if err != nil {
		panic("conda: zstd encoder: " + err.Error())
	}
	return enc
}}

// ShardIndexDigests returns what a compressed shard index (CEP-16, as
// ShardIndex makes them or an upstream publishes them) maps each package
// name to: the SHA-256 of its shard file; and where the shards are
// (info.shards_base_url, "" if absent). A name whose value is not 32
// bytes is left out. At most maxShardSize bytes are decoded, and read
// within what they hold (mpread.go).
func ShardIndexDigests(index []byte) (digests map[string][32]byte, shardsBase string, err error) {
	return ShardIndexDigestsMax(index, maxShardSize)
}

// ShardIndexDigestsMax is ShardIndexDigests for an index of at most max
// bytes decoded: the digests map costs about 2.5 times what it decodes
// from, so a caller keeping upstream indexes bounds them far below the
// shard bound (conda-forge's linux-64 decodes to about 1.2 MB).
func ShardIndexDigestsMax(index []byte, max int) (digests map[string][32]byte, shardsBase string, err error) {
	raw, err := unzstd(index)
	if err == nil && len(raw) > max {
		err = fmt.Errorf("decodes to more than %d bytes", max)
	}
	if err != nil {
		return nil, "", fmt.Errorf("conda: shard index: %w", err)
	}
	out := map[string][32]byte{}
	err = eachMember(raw, func(key string, r *mpReader) error {
		switch key {
		case "info": // read if it is as CEP-16 says, else passed over
			at := *r
			err := eachMemberOf(r, func(k string, r *mpReader) error {
				if k != "shards_base_url" {
					return r.skip()
				}
				v, err := r.bytes()
				shardsBase = string(v)
				return err
			})
			if err != nil {
				*r, shardsBase = at, ""
				return r.skip()
			}
			return nil
		case "shards":
		default:
			return r.skip()
		}
		n, err := r.mapLen()
		for range n {
			var name, d []byte
			if name, err = r.bytes(); err != nil {
				break
			}
			if d, err = r.bytes(); err != nil {
				break
			}
			if len(d) == 32 {
				out[string(name)] = [32]byte(d)
			}
		}
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("conda: shard index: %w", err)
	}
	return out, shardsBase, nil
}

// eachMember calls fn for each key of the MessagePack map doc, with the
// reader at its value (fn must read or skip it).
func eachMember(doc []byte, fn func(key string, r *mpReader) error) error {
	return eachMemberOf(&mpReader{b: doc}, fn)
}

// eachMemberOf is eachMember on the map r is at (nil: no members).
func eachMemberOf(r *mpReader, fn func(key string, r *mpReader) error) error {
	n, err := r.mapLen()
	for range n {
		var k []byte
		if k, err = r.bytes(); err != nil {
			break
		}
		if err = fn(string(k), r); err != nil {
			break
		}
	}
	return err
}

// ShardEntry is what a shard says of one package file.
type ShardEntry struct {
	SHA256 []byte `msgpack:"sha256"`
	Size   int64  `msgpack:"size"`
}

// ShardEntries returns what a shard file (compressed, as Shards makes
// them, or an upstream's) says of each package file it lists; a file in
// both "packages" and "packages.conda" is as "packages" says. It is read
// within what it holds (mpread.go).
func ShardEntries(shard []byte) (map[string]ShardEntry, error) {
	pkgs, condas := map[string]ShardEntry{}, map[string]ShardEntry{}
	err := eachShardRecord(shard, func(section string, fn []byte, r *mpReader) error {
		e, err := readShardEntry(r)
		if section == "packages" {
			pkgs[string(fn)] = e
		} else {
			condas[string(fn)] = e
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	maps.Copy(condas, pkgs)
	return condas, nil
}

// ShardEntryOf returns what a shard says of file fn alone (as
// ShardEntries would), without building the shard's map: the only memory
// it keeps is the decoded document, for upstream shards whose entries are
// not worth keeping.
func ShardEntryOf(shard []byte, fn string) (e ShardEntry, found bool, err error) {
	var inPkgs bool
	err = eachShardRecord(shard, func(section string, file []byte, r *mpReader) error {
		if string(file) != fn {
			return r.skip()
		}
		got, err := readShardEntry(r)
		if section == "packages" || !inPkgs { // "packages" says last
			e, found, inPkgs = got, true, section == "packages"
		}
		return err
	})
	if err != nil {
		return ShardEntry{}, false, err
	}
	return e, found, nil
}

// eachShardRecord calls fn with each record of a compressed shard: its
// section ("packages" or "packages.conda"), its file name, and the reader
// at the record (fn reads or skips it). The shard is read within what it
// holds (mpread.go).
func eachShardRecord(shard []byte, fn func(section string, file []byte, r *mpReader) error) error {
	raw, err := unzstd(shard)
	if err == nil {
		err = eachMember(raw, func(key string, r *mpReader) error {
			if key != "packages" && key != "packages.conda" {
				return r.skip()
			}
			n, err := r.mapLen()
			for range n {
				var file []byte
				if file, err = r.bytes(); err == nil {
					err = fn(key, file, r)
				}
				if err != nil {
					break
				}
			}
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("conda: shard: %w", err)
	}
	return nil
}

// readShardEntry reads one record of a shard: its sha256 (copied) and
// size; the other fields are skipped. An array reads as the reference
// (vmihailenco) reads a struct from one: empty, a zero entry; of two,
// sha256 and size; else an error.
func readShardEntry(r *mpReader) (ShardEntry, error) {
	var e ShardEntry
	if n, ok, err := r.arrayLen(); ok {
		if err == nil && n != 0 && n != 2 {
			err = errMsgpack
		}
		if err == nil && n == 2 {
			var d []byte
			if d, err = r.bytes(); err == nil {
				e.SHA256 = bytes.Clone(d)
				e.Size, err = r.int()
			}
		}
		return e, err
	}
	n, err := r.mapLen()
	for range n {
		var k []byte
		if k, err = r.bytes(); err != nil {
			break
		}
		switch string(k) {
		case "sha256":
			var d []byte
			if d, err = r.bytes(); err == nil {
				e.SHA256 = bytes.Clone(d)
			}
		case "size":
			e.Size, err = r.int()
		default:
			err = r.skip()
		}
		if err != nil {
			break
		}
	}
	return e, err
}

// ShardPairEntry returns what one AppendShardPair entry says of its file:
// the file name and its sha256 and size.
func ShardPairEntry(pair []byte) (string, ShardEntry, error) {
	fn, rest, ok := msgpackStrNext(pair)
	if !ok {
		return "", ShardEntry{}, errors.New("conda: shard entry: no file name")
	}
	var e ShardEntry
	if err := msgpack.Unmarshal(rest, &e); err != nil {
		return "", ShardEntry{}, fmt.Errorf("conda: shard entry %s: %w", fn, err)
	}
	return string(fn), e, nil
}

// ShardKeep is how long a shard stays served after a rebuild stopped
// naming it, for clients holding an older shard index (CEP-16 suggests
// about a week).
const ShardKeep = 7 * 24 * time.Hour

// shardFields returns a shallow copy of r.Fields with md5 and sha256
// converted from hex to raw bytes.
func shardFields(r Record) (map[string]any, error) {
	f := make(map[string]any, len(r.Fields))
	for k, v := range r.Fields {
		f[k] = v
	}
	for k, n := range map[string]int{"md5": 16, "sha256": 32} {
		v, ok := f[k]
		if !ok {
			continue
		}
		b, err := digestBytes(v, n)
		if err != nil {
			return nil, fmt.Errorf("conda: record %s: %s %w", r.Filename, k, err)
		}
		f[k] = b
	}
	return f, nil
}

// digestBytes converts a hex string (or raw bytes) digest of n bytes.
func digestBytes(v any, n int) ([]byte, error) {
	switch x := v.(type) {
	case string:
		b, err := hex.DecodeString(x)
		if err != nil || len(b) != n {
			return nil, fmt.Errorf("not %d hex-encoded bytes", n)
		}
		return b, nil
	case []byte:
		if len(x) != n {
			return nil, fmt.Errorf("not %d bytes", n)
		}
		return slices.Clone(x), nil
	}
	return nil, fmt.Errorf("has type %T", v)
}

// maxShardSize bounds a decoded shard (LookupShard).
const maxShardSize = 256 << 20

var zstdDecoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxShardSize), zstd.WithDecoderMaxWindow(maxZstdWindow))
	if err != nil {
		panic("conda: zstd decoder: " + err.Error())
	}
	return d
}}

// unzstd decodes b (at most maxShardSize bytes decoded).
func unzstd(b []byte) ([]byte, error) {
	d := zstdDecoders.Get().(*zstd.Decoder)
	defer zstdDecoders.Put(d)
	return d.DecodeAll(b, nil)
}

// AppendZstd appends b compressed as one frame at WholeZstd: the level of
// everything a proxy derives from a large upstream index, where
// SpeedBestCompression would take three times as long (see WholeZstd).
func AppendZstd(dst, b []byte) []byte {
	enc := wholeEncoders.Get().(*zstd.Encoder)
	defer wholeEncoders.Put(enc)
	return enc.EncodeAll(b, dst)
}

// Compressor compresses one frame at a time as AppendZstd does, with an
// encoder of its own: a loop over many shards keeps one (a sync.Pool may
// drop its encoders at every garbage collection). Not safe for concurrent
// use.
type Compressor struct{ enc *zstd.Encoder }

// NewCompressor returns a Compressor.
func NewCompressor() *Compressor { return &Compressor{enc: wholeEncoders.New().(*zstd.Encoder)} }

// Append appends b compressed.
func (c *Compressor) Append(dst, b []byte) []byte { return c.enc.EncodeAll(b, dst) }

var wholeEncoders = sync.Pool{New: func() any {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(WholeZstd), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(true))
	if err != nil {
		panic("conda: zstd encoder: " + err.Error())
	}
	return enc
}}

// CompareShardPairs orders AppendShardPair entries by the file names they
// start with, as strings.Compare of their ShardPairName would, without a
// string per comparison (sorting half a million entries made a million).
func CompareShardPairs(a, b []byte) int {
	na, _ := msgpackStr(a)
	nb, _ := msgpackStr(b)
	return bytes.Compare(na, nb)
}

// ShardPairName returns the file name an AppendShardPair entry starts
// with ("" if pair does not start with a MessagePack string).
func ShardPairName(pair []byte) string {
	s, _ := msgpackStr(pair)
	return string(s)
}
