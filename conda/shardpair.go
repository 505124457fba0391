package conda

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
)

// PairRecord is one record of a repodata document as ScanShardPairs gives
// it: its shard entry and what a consumer needs besides, without the
// field map a Record carries. Pair and JSON alias the scanner's buffers
// and are valid only during the callback.
type PairRecord struct {
	// Filename is the package file name.
	Filename string
	// Name is the package name (Record.Name; a substring of Filename).
	Name string
	// Conda says the file is a .conda (listed under packages.conda).
	Conda bool
	// Version and BuildNumber are Record.Version and Record.BuildNumber.
	Version     []byte
	BuildNumber int64
	// Pair is the record's entry in its name's shard: the bytes
	// AppendShardPair makes of the parsed record.
	Pair []byte
	// JSON is the record's value as the document writes it.
	JSON []byte
	// JSONSum is the SHA-256 of JSON when ScanOptions.SumJSON asks for it
	// (computed where the record is transcoded: on the workers).
	JSONSum [32]byte
}

// ScanShardPairs is ScanRepodataReader for a consumer that needs each
// record only as its shard entry: every record is checked exactly as
// ScanRepodataReader checks it (the same documents are accepted), but it
// is transcoded from its JSON straight to MessagePack, never decoded into
// a field map.
//
// Why: deriving a proxy's shards of a conda-forge-sized index (500,000
// records) spent most of its time building, converting and collecting the
// maps of every record (BenchmarkDeriveSet). FuzzScanShardPairs holds it
// to ScanRepodata followed by AppendShardPair, errors included.
func ScanShardPairs(r io.Reader, opt ScanOptions, each func(*PairRecord) error) (*RepodataDoc, error) {
	if opt.MaxValue <= 0 {
		opt.MaxValue = MaxRepodataValue
	}
	s := &repodataScanner{p: jsonParser{keys: map[string]string{}}, r: r, max: opt.MaxValue, want: opt.Want}
	s.pairs = each
	s.tr = &pairTranscoder{p: &s.p}
	s.sumJSON = opt.SumJSON
	if opt.Workers <= 1 {
		return s.scan(nil)
	}
	s.par = newPairPipeline(opt.Workers, opt.SumJSON, each)
	doc, err := s.scan(nil)
	// What the workers and the callback found comes first in the
	// document: before anything the scanner found after it.
	if perr := s.par.finish(); perr != nil {
		if _, ok := errors.AsType[*syntaxError](perr); ok {
			perr = fmt.Errorf("%w: %w", ErrBadRepodata, perr)
		}
		return nil, perr
	}
	return doc, err
}

// pairRecord reads the record at the parser (on its '{') into s.tr and
// hands it to s.pairs.
func (s *repodataScanner) pairRecord(fn string, parsed Filename) error {
	t := s.tr
	start := t.p.i
	pair, err := t.record(fn, parsed)
	if err != nil {
		return err
	}
	t.rec = PairRecord{
		Filename:    fn,
		Name:        parsed.Name,
		Conda:       parsed.Ext == ExtConda,
		Version:     t.version,
		BuildNumber: t.buildNumber,
		Pair:        pair,
		JSON:        t.p.b[start:t.p.i],
	}
	if s.sumJSON {
		t.rec.JSONSum = sha256.Sum256(t.rec.JSON)
	}
	return s.pairs(&t.rec)
}

// pairTranscoder turns one JSON record into its shard entry: MessagePack
// with every object's keys in byte order (the last of repeated keys
// winning), integers in their smallest form, and the record's md5 and
// sha256 as raw bytes, as appendMsgpack writes the parsed record.
type pairTranscoder struct {
	p   *jsonParser
	out []byte
	// levels are the scratch buffers of the objects being read, one per
	// nesting level.
	levels []*objectLevel
	rec    PairRecord

	version     []byte
	verBuf      []byte
	buildNumber int64
}

// objectLevel collects one object's members before they are sorted.
type objectLevel struct {
	buf     []byte // per member: raw key, then msgpack key and value
	members []member
}

// member locates one object member in its level's buffer: the raw
// (unescaped) key at buf[at:enc], its msgpack key and value at
// buf[enc:end], the value's own encoding from val.
type member struct {
	at, enc, val, end int
}

func (l *objectLevel) key(m member) []byte { return l.buf[m.at:m.enc] }

func (t *pairTranscoder) level(depth int) *objectLevel {
	for len(t.levels) <= depth {
		t.levels = append(t.levels, &objectLevel{})
	}
	l := t.levels[depth]
	l.buf, l.members = l.buf[:0], l.members[:0]
	return l
}

// record transcodes the record object at the parser and checks it as
// checkRepodataRecord does; it returns the shard entry.
func (t *pairTranscoder) record(fn string, parsed Filename) ([]byte, error) {
	l, err := t.members(0, 3)
	if err != nil {
		return nil, err
	}
	dst := appendMsgpackString(t.out[:0], fn)
	dst = appendMsgpackLen(dst, len(l.members), 0x80, 0xde, 0xdf)
	t.version, t.buildNumber = nil, 0
	for _, m := range l.members {
		k := l.key(m)
		v := l.buf[m.val:m.end]
		switch string(k) {
		case "name":
			if s, ok := msgpackStr(v); !ok || string(s) != parsed.Name {
				return nil, recordError("name does not match the file name")
			}
		case "version", "build":
			s, ok := msgpackStr(v)
			if !ok {
				return nil, recordError(string(k) + " is not a string")
			}
			if string(k) == "version" && len(s) > 0 {
				t.version = s
			}
		case "subdir":
			if s, ok := msgpackStr(v); !ok || !ValidSubdir(string(s)) {
				return nil, recordError("subdir is not a valid subdir")
			}
		case "build_number", "size":
			n, ok := msgpackNonNegative(v)
			if !ok {
				return nil, recordError(string(k) + " is not a non-negative integer")
			}
			if string(k) == "build_number" {
				t.buildNumber = n
			}
		case "md5", "sha256":
			n := 16
			if string(k) == "sha256" {
				n = 32
			}
			s, ok := msgpackStr(v)
			var raw [32]byte
			if !ok || len(s) != 2*n {
				return nil, recordError(fmt.Sprintf("%s is not a %d-byte hex digest", k, n))
			}
			if _, err := hex.Decode(raw[:n], s); err != nil {
				return nil, recordError(fmt.Sprintf("%s is not a %d-byte hex digest", k, n))
			}
			dst = append(dst, l.buf[m.enc:m.val]...)
			dst = appendMsgpackBin(dst, raw[:n])
			continue
		case "depends", "constrains":
			if !msgpackStrings(v) {
				return nil, recordError(string(k) + " is not a list of strings")
			}
		}
		dst = append(dst, l.buf[m.enc:m.end]...)
	}
	if t.version == nil {
		t.verBuf = append(t.verBuf[:0], parsed.Version...)
		t.version = t.verBuf
	}
	t.out = dst
	return dst, nil
}

// recordError is a record that fails checkRepodataRecord's checks.
type recordError string

func (e recordError) Error() string { return string(e) }

// members reads the object at the parser (on its '{') at nesting depth
// (as jsonParser counts it) into the level's buffer, sorted by key with
// repeated keys dropped but the last.
func (t *pairTranscoder) members(level, depth int) (*objectLevel, error) {
	p := t.p
	if depth > maxJSONDepth {
		return nil, errJSONDepth
	}
	l := t.level(level)
	p.i++ // {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return l, nil
	}
	for {
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, p.fail("looking for beginning of object key string")
		}
		k, err := p.strBytes()
		if err != nil {
			return nil, err
		}
		m := member{at: len(l.buf)}
		l.buf = append(l.buf, k...)
		m.enc = len(l.buf)
		l.buf = appendMsgpackString(l.buf, l.buf[m.at:m.enc])
		m.val = len(l.buf)
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, p.fail("after object key")
		}
		p.i++
		p.space()
		if l.buf, err = t.value(l.buf, level, depth); err != nil {
			return nil, err
		}
		m.end = len(l.buf)
		l.members = append(l.members, m)
		p.space()
		if p.i >= len(p.b) {
			return nil, p.fail("after object key:value pair")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.space()
		case '}':
			p.i++
			// Sorted by key, stable: of repeated keys the last wins.
			// Upstreams mostly write keys sorted already.
			cmpKeys := func(a, b member) int { return bytes.Compare(l.key(a), l.key(b)) }
			if !slices.IsSortedFunc(l.members, cmpKeys) {
				slices.SortStableFunc(l.members, cmpKeys)
			}
			out := l.members[:0]
			for i, m := range l.members {
				if i+1 < len(l.members) && bytes.Equal(l.key(m), l.key(l.members[i+1])) {
					continue
				}
				out = append(out, m)
			}
			l.members = out
			return l, nil
		default:
			return nil, p.fail("after object key:value pair")
		}
	}
}

// value appends the MessagePack of the JSON value at the parser; level is
// the scratch level of the object it is in.
func (t *pairTranscoder) value(dst []byte, level, depth int) ([]byte, error) {
	p := t.p
	if p.i >= len(p.b) {
		return nil, p.fail("looking for beginning of value")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		l, err := t.members(level+1, depth+1)
		if err != nil {
			return nil, err
		}
		dst = appendMsgpackLen(dst, len(l.members), 0x80, 0xde, 0xdf)
		for _, m := range l.members {
			dst = append(dst, l.buf[m.enc:m.end]...)
		}
		return dst, nil
	case c == '[':
		return t.array(dst, level, depth+1)
	case c == '"':
		s, err := p.strBytes()
		if err != nil {
			return nil, err
		}
		return appendMsgpackString(dst, s), nil
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.i
		if _, err := p.number(); err != nil {
			return nil, err
		}
		return appendMsgpackNumberBytes(dst, p.b[start:p.i]), nil
	case c == 't':
		return append(dst, 0xc3), p.literal("true")
	case c == 'f':
		return append(dst, 0xc2), p.literal("false")
	case c == 'n':
		return append(dst, 0xc0), p.literal("null")
	}
	return nil, p.fail("looking for beginning of value")
}

// array appends the MessagePack of the array at the parser: a header of
// the largest size first, shrunk once the count is known.
func (t *pairTranscoder) array(dst []byte, level, depth int) ([]byte, error) {
	p := t.p
	if depth > maxJSONDepth {
		return nil, errJSONDepth
	}
	p.i++ // [
	head := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0)
	n := 0
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
	} else {
	loop:
		for {
			var err error
			if dst, err = t.value(dst, level, depth); err != nil {
				return nil, err
			}
			n++
			p.space()
			if p.i >= len(p.b) {
				return nil, p.fail("after array element")
			}
			switch p.b[p.i] {
			case ',':
				p.i++
				p.space()
			case ']':
				p.i++
				break loop
			default:
				return nil, p.fail("after array element")
			}
		}
	}
	var h [5]byte
	hdr := appendMsgpackLen(h[:0], n, 0x90, 0xdc, 0xdd)
	copy(dst[head:], hdr)
	if len(hdr) < 5 {
		copy(dst[head+len(hdr):], dst[head+5:])
		dst = dst[:len(dst)-(5-len(hdr))]
	}
	return dst, nil
}

// appendMsgpackNumberBytes is appendMsgpackNumber of a JSON number
// literal, without a string for the common short integers.
func appendMsgpackNumberBytes(dst []byte, b []byte) []byte {
	neg := len(b) > 0 && b[0] == '-'
	digits := b
	if neg {
		digits = b[1:]
	}
	if len(digits) > 0 && len(digits) <= 18 {
		var n int64
		for _, c := range digits {
			if c < '0' || c > '9' {
				return appendMsgpackNumber(dst, string(b))
			}
			n = n*10 + int64(c-'0')
		}
		if neg {
			n = -n
		}
		return appendMsgpackInt(dst, n)
	}
	return appendMsgpackNumber(dst, string(b))
}

// msgpackStr returns the payload of the MessagePack string v starts with.
func msgpackStr(v []byte) ([]byte, bool) {
	s, _, ok := msgpackStrNext(v)
	return s, ok
}

// msgpackStrNext returns the payload of the MessagePack string v starts
// with and the rest of v after it.
func msgpackStrNext(v []byte) (s, rest []byte, ok bool) {
	if len(v) == 0 {
		return nil, nil, false
	}
	n, at := 0, 1
	switch c := v[0]; {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9 && len(v) >= 2:
		n, at = int(v[1]), 2
	case c == 0xda && len(v) >= 3:
		n, at = int(v[1])<<8|int(v[2]), 3
	case c == 0xdb && len(v) >= 5:
		n, at = int(v[1])<<24|int(v[2])<<16|int(v[3])<<8|int(v[4]), 5
	default:
		return nil, nil, false
	}
	if at+n > len(v) {
		return nil, nil, false
	}
	return v[at : at+n], v[at+n:], true
}

// msgpackNonNegative reads a MessagePack integer that asInt64 of the
// JSON number would accept as non-negative: 0 to MaxInt64.
func msgpackNonNegative(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n uint64
	switch c := v[0]; {
	case c <= 0x7f:
		n = uint64(c)
	case c == 0xcc && len(v) >= 2:
		n = uint64(v[1])
	case c == 0xcd && len(v) >= 3:
		n = uint64(v[1])<<8 | uint64(v[2])
	case c == 0xce && len(v) >= 5:
		n = uint64(v[1])<<24 | uint64(v[2])<<16 | uint64(v[3])<<8 | uint64(v[4])
	case c == 0xcf && len(v) >= 9:
		for _, b := range v[1:9] {
			n = n<<8 | uint64(b)
		}
	default:
		return 0, false
	}
	if n > 1<<63-1 {
		return 0, false
	}
	return int64(n), true
}

// msgpackStrings says v is a MessagePack array of strings only.
func msgpackStrings(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	n, at := 0, 1
	switch c := v[0]; {
	case c&0xf0 == 0x90:
		n = int(c & 0x0f)
	case c == 0xdc && len(v) >= 3:
		n, at = int(v[1])<<8|int(v[2]), 3
	case c == 0xdd && len(v) >= 5:
		n, at = int(v[1])<<24|int(v[2])<<16|int(v[3])<<8|int(v[4]), 5
	default:
		return false
	}
	rest := v[at:]
	for range n {
		var ok bool
		if _, rest, ok = msgpackStrNext(rest); !ok {
			return false
		}
	}
	return true
}
