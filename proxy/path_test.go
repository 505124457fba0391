package proxy

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/upstream"
	"github.com/ipfs/go-cid"
)

func TestCheckPath(t *testing.T) {
	shard := "linux-64/shards/" + strings.Repeat("ab", 32) + ".msgpack.zst"
	cases := map[string]bool{
		"channeldata.json":                            true,
		"index.html":                                  true,
		"noarch/repodata.json":                        true,
		"linux-64/repodata.json.zst":                  true,
		"linux-64/current_repodata.json.bz2":          true,
		"linux-64/repodata_shards.msgpack.zst":        true,
		"linux-64/numpy-1.26.4-py312h8753938_0.conda": true,
		"osx-arm64/pkg-1!2.0-h0_0.tar.bz2":            true,
		shard:                                         true,

		"":                                 false,
		"linux-64":                         false,
		"linux-64/":                        false,
		"linux-64/random.json":             false,
		"linux-64/x?y.conda":               false,
		"linux-64/%2e%2e%2fsecret":         false,
		"linux-64/../noarch/repodata.json": false,
		"../linux-64/repodata.json":        false,
		"Linux-64/repodata.json":           false,
		"linux-65/repodata.json":           false, // not a subdir conda knows
		"s0a1b2c3/repodata.json":           false,
		"linux-64/a/repodata.json":         false,
		"linux-64/shards/abc.msgpack.zst":  false,
		strings.ToUpper(shard):             false,
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

func TestRecordSetsAreBounded(t *testing.T) {
	r := newRecordSets(10)
	set := func(n int) *recordSet {
		m := map[string]want{}
		for i := range n {
			m[time.Duration(i).String()] = want{}
		}
		return &recordSet{m: m}
	}
	keys := make([]cid.Cid, 5)
	for i := range keys {
		h := make([]byte, 34)
		h[0], h[1], h[33] = 0x12, 0x20, byte(i)
		keys[i] = cid.NewCidV1(cid.Raw, h)
	}
	r.put(keys[0], set(4))
	r.put(keys[1], set(4))
	r.get(keys[0]) // keys[1] is now the least recently used
	r.put(keys[2], set(4))
	if _, ok := r.get(keys[1]); ok || r.total > 10 {
		t.Fatalf("least recently used set kept (total %d)", r.total)
	}
	if _, ok := r.get(keys[0]); !ok {
		t.Fatal("recently used set dropped")
	}
	r.put(keys[3], set(50)) // larger than the bound: kept alone
	if _, ok := r.get(keys[3]); !ok || len(r.sets) != 1 || r.total != 50 {
		t.Fatalf("%d sets, total %d", len(r.sets), r.total)
	}
}
