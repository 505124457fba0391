package proxy

import (
	"bytes"
	"encoding/hex"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/upstream"
	"github.com/ipfs/go-cid"
)

func TestCheckPath(t *testing.T) {
	shard := "linux-64/shards/" + strings.Repeat("ab", 32) + ".msgpack.zst"
	cases := map[string]bool{
		"channeldata.json":                                       true,
		"index.html":                                             true,
		"noarch/repodata.json":                                   true,
		"linux-64/repodata.json.zst":                             true,
		"linux-64/current_repodata.json.bz2":                     true,
		"linux-64/repodata_shards.msgpack.zst":                   true,
		"linux-64/numpy-1.26.4-py312h8753938_0.conda":            true,
		"osx-arm64/pkg-1!2.0-h0_0.tar.bz2":                       true,
		shard:                                                    true,
		strings.Replace(shard, "shards/", "", 1):                 true, // beside the index (conda-index)
		strings.Replace(shard, "shards/", "repodata_shards/", 1): true,

		"":                                           false,
		"linux-64":                                   false,
		"linux-64/":                                  false,
		"linux-64/random.json":                       false,
		"linux-64/x?y.conda":                         false,
		"linux-64/%2e%2e%2fsecret":                   false,
		"linux-64/../noarch/repodata.json":           false,
		"../linux-64/repodata.json":                  false,
		"Linux-64/repodata.json":                     false,
		"linux-65/repodata.json":                     false, // not a subdir conda knows
		"s0a1b2c3/repodata.json":                     false,
		"linux-64/a/repodata.json":                   false,
		"linux-64/shards/abc.msgpack.zst":            false,
		strings.Replace(shard, "shards/", "../", 1):  false,
		strings.Replace(shard, "shards/", "./", 1):   false,
		strings.Replace(shard, "shards/", "a b/", 1): false,
		strings.Replace(shard, "shards/", "a/b/", 1): false,
		"linux-64/repodata.json/" + strings.Repeat("ab", 32) + ".msgpack.zst": true, // a directory name like any other
		strings.ToUpper(shard):                                 false,
		"linux-64/" + strings.Repeat("a", 7000) + "-1-0.conda": false,
		"linux-64/pkg-1.0-0.conda/x":                           false,
		"linux-64/.pkg-1.0-0.conda":                            false,
		"linux-64/pkg-1.0-0.zip":                               false,
		"linux-64\\pkg-1.0-0.conda":                            false,
	}
	for p, want := range cases {
		if got := checkPath(p) == nil; got != want {
			t.Errorf("checkPath(%.60q) accepted %v, want %v", p, got, want)
		}
	}
}

// FuzzCheckPath: an accepted path is short, uses conda's characters only,
// has no empty or dot segments, and is sent upstream as exactly itself.
func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{"linux-64/repodata.json", "noarch/a-1-0.conda", "linux-64/x?y.conda", "linux-64/%2e%2e%2f",
		"linux-64/shards/" + strings.Repeat("0", 64) + ".msgpack.zst", "a/../b", "channeldata.json"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if checkPath(p) != nil {
			return
		}
		if len(p) > maxPathLen || strings.ContainsAny(p, "%?#\\ \x00") {
			t.Fatalf("accepted %q", p)
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("accepted %q: segment %q", p, seg)
			}
		}
		u, err := url.Parse(upstream.Join("https://h/c", p))
		if err != nil || u.Path != "/c/"+p || u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("accepted %q, sent as %v (%v)", p, u, err)
		}
	})
}

func TestNegCacheIsBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newNegCache(100)
	for i := range 1000 {
		c.add(strings.Repeat("k", i%7)+string(rune('a'+i%26))+time.Duration(i).String(), now.Add(time.Minute), now)
		if c.len() > 100 {
			t.Fatalf("%d entries, bound 100", c.len())
		}
	}
	c.add("x", now.Add(time.Minute), now)
	if !c.has("x", now) || c.has("x", now.Add(time.Minute)) || c.has("y", now) {
		t.Fatal("remembered the wrong paths or past their time")
	}
}

// TestDerivedSetEncoding: a set survives encodeSet/decodeSet; truncated
// or extended encodings are refused.
func TestDerivedSetEncoding(t *testing.T) {
	s := sampleSet()
	b := encodeSet(s)
	got, err := decodeSet(b)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, got, s)
	}
	for n := range len(b) {
		if _, err := decodeSet(b[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", n)
		}
	}
	if _, err := decodeSet(append(b, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	// A set written before the raw digests ("pxd1": no raw digest after
	// each shard) is read without them: its next derivation is a full one.
	old := []byte("pxd1")
	rest := b[len("pxd2"):]
	for _, n := range []string{"numpy", "python", "zlib"} {
		ns := s.names[n]
		i := bytes.Index(rest, ns.raw[:])
		old = append(old, rest[:i]...)
		rest = rest[i+32:]
	}
	old = append(old, rest...)
	got, err = decodeSet(old)
	want := sampleSet()
	want.hasRaw = false
	for n, ns := range want.names {
		ns.raw = [32]byte{}
		want.names[n] = ns
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("pxd1: %v\n%+v", err, got)
	}
}

func sampleSet() *derivedSet {
	c := func(i byte) cid.Cid {
		h := make([]byte, 34)
		h[0], h[1], h[33] = 0x12, 0x20, i
		return cid.NewCidV1(cid.Raw, h)
	}
	s := &derivedSet{src: c(1), tag: "1700000000 https://u.example/c", built: 1700000000, files: map[string]cid.Cid{fileZst: c(2), fileShardIndex: c(3)},
		names: map[string]nameShard{}, hasRaw: true, shards: map[[32]byte]bool{}, retired: map[[32]byte]int64{{9}: 1699999999}}
	for i, n := range []string{"numpy", "python", "zlib"} {
		ns := nameShard{entries: [32]byte{byte(i)}, shard: [32]byte{byte(i), 1}, raw: [32]byte{byte(i), 2}}
		s.names[n] = ns
		s.shards[ns.shard] = true
	}
	return s
}

// FuzzDecodeSet: decoding never panics, and what decodes re-encodes to
// the same bytes.
func FuzzDecodeSet(f *testing.F) {
	f.Add(encodeSet(sampleSet()))
	f.Add([]byte("pxd1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSet(b)
		if err != nil {
			return
		}
		again, err := decodeSet(encodeSet(s))
		s.hasRaw = true // (written as "pxd2" whatever it was read from)
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("re-encoded set differs: %v", err)
		}
	})
}

// TestUpShardPath: an upstream shard index's shards_base_url places its
// shards inside the subdir or not at all (a URL, an absolute path or one
// leaving the subdir is not fetched through the channel).
func TestUpShardPath(t *testing.T) {
	var sum [32]byte
	sum[0] = 0xab
	h := hex.EncodeToString(sum[:]) + ".msgpack.zst"
	for _, tc := range []struct{ base, want string }{
		{"./shards/", "linux-64/shards/" + h},
		{"", "linux-64/" + h},
		{"./", "linux-64/" + h},
		{"repodata_shards/", "linux-64/repodata_shards/" + h},
		{"a/../b/", "linux-64/b/" + h},
		{"shards", "linux-64/shards/" + h}, // a directory, slash or not
		{".", "linux-64/" + h},
		{"a/b/", ""}, // deeper than a client may ask
		{"a b/", ""}, // nor any name
		{"%2e%2e/", ""},
		{"../", ""},
		{"../noarch/", ""},
		{"./../../x/", ""},
		{"/shards/", ""},
		{"https://cdn.example/shards/", ""},
		{"//cdn.example/", ""},
		{"shards/?x=", ""},
		{"shards\\", ""},
	} {
		if got := upShardPath("linux-64", tc.base, sum); got != tc.want {
			t.Errorf("base %q: %q, want %q", tc.base, got, tc.want)
		}
	}
}
