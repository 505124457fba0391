package conda

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
)

// latestOf scans doc into a Latest as the proxy does, with each name's
// digest.
func latestOf(t testing.TB, doc []byte) (*Latest, map[string][32]byte) {
	t.Helper()
	l, names, err := scanLatest(doc)
	if err != nil {
		t.Fatal(err)
	}
	return l, names
}

func scanLatest(doc []byte) (*Latest, map[string][32]byte, error) {
	var l Latest
	ds := map[string]*NameDigest{}
	if _, err := ScanShardPairs(bytes.NewReader(doc), ScanOptions{SumJSON: true}, func(r *PairRecord) error {
		l.AddPair(r)
		if ds[r.Name] == nil {
			ds[r.Name] = NewNameDigest()
		}
		ds[r.Name].Add(r.Filename, r.JSONSum)
		return nil
	}); err != nil {
		return nil, nil, err
	}
	names := map[string][32]byte{}
	for n, d := range ds {
		names[n] = d.Sum()
	}
	return &l, names, nil
}

// only returns the Latest of l's candidates of the names whose digest is
// not the one in before: what a proxy collects after a small change.
func only(l *Latest, names, before map[string][32]byte) *Latest {
	o := &Latest{pairs: map[string]*latestPairs{}}
	for n, lp := range l.pairs {
		if old, ok := before[n]; !ok || old != names[n] {
			o.pairs[n] = lp
		}
	}
	return o
}

// TestCurrentCache: each Build gives Latest.CurrentRepodata's bytes and
// encodes only the names whose latest records changed.
func TestCurrentCache(t *testing.T) {
	base := synthRecords(400, "linux-64") // 40 names, 10 records each
	latestOfName := func(recs []Record, name string) (i int) {
		l := latestRecords(recs)
		for _, r := range l {
			if r.Name() == name {
				for k := range recs {
					if recs[k].Filename == r.Filename {
						return k
					}
				}
			}
		}
		t.Fatalf("no latest record of %s", name)
		return -1
	}
	edit := func(recs []Record, fn func([]Record) []Record) []Record {
		out := make([]Record, len(recs))
		for i, r := range recs {
			f := map[string]any{}
			for k, v := range r.Fields {
				f[k] = v
			}
			out[i] = Record{Filename: r.Filename, Subdir: r.Subdir, Fields: f}
		}
		return fn(out)
	}
	newSum := hex.EncodeToString(bytes.Repeat([]byte{0xab}, 32))
	steps := []struct {
		name        string
		edit        func([]Record) []Record
		wantEncoded int
	}{
		{"cold: every name", func(r []Record) []Record { return r }, 40},
		{"no change", func(r []Record) []Record { return r }, 0},
		{"a latest record's sha256", func(r []Record) []Record {
			r[latestOfName(r, "pkg-0007")].Fields["sha256"] = newSum
			return r
		}, 1},
		{"an older record's sha256", func(r []Record) []Record {
			i := latestOfName(r, "pkg-0003")
			for k := range r { // another record of the name, not tied for latest
				if k != i && r[k].Name() == "pkg-0003" && (r[k].Version() != r[i].Version() || r[k].BuildNumber() != r[i].BuildNumber()) {
					r[k].Fields["sha256"] = newSum
					return r
				}
			}
			t.Fatal("no older record of pkg-0003")
			return r
		}, 1}, // the name's records changed: its part is made again (the same)
		{"a new latest version and a new name", func(r []Record) []Record {
			nr := r[latestOfName(r, "pkg-0011")]
			f := map[string]any{}
			for k, v := range nr.Fields {
				f[k] = v
			}
			f["version"] = "99.0"
			r = append(r, Record{Filename: "pkg-0011-99.0-" + f["build"].(string) + ".conda", Subdir: "linux-64", Fields: f})
			g := map[string]any{"name": "zz-new", "version": "1.0", "build": "h0_0", "build_number": json.Number("0"), "sha256": newSum}
			return append(r, Record{Filename: "zz-new-1.0-h0_0.tar.bz2", Subdir: "linux-64", Fields: g})
		}, 2},
		{"a name removed", func(r []Record) []Record {
			out := r[:0]
			for _, x := range r {
				if x.Name() != "pkg-0020" {
					out = append(out, x)
				}
			}
			return out
		}, 0},
	}
	var c CurrentCache
	var prev []byte
	var before map[string][32]byte
	recs := base
	for _, st := range steps {
		recs = edit(recs, st.edit)
		l, names := latestOf(t, Repodata("linux-64", recs))
		// Only the candidates of the names that changed (all of them at
		// first).
		got, encoded, err := c.Build("linux-64", names, only(l, names, before), prev)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		prev, before = got, names
		if want := l.CurrentRepodata("linux-64"); !bytes.Equal(got, want) {
			t.Fatalf("%s: Build differs from CurrentRepodata:\n%s\nwant\n%s", st.name, got, want)
		}
		if want := CurrentRepodata("linux-64", recs); !bytes.Equal(got, want) {
			t.Fatalf("%s: Build differs from CurrentRepodata of every record", st.name)
		}
		if encoded != st.wantEncoded {
			t.Errorf("%s: %d names encoded, want %d", st.name, encoded, st.wantEncoded)
		}
		if len(c.names) != len(names) {
			t.Errorf("%s: the cache holds %d names, the index has %d", st.name, len(c.names), len(names))
		}
	}
	l, names := latestOf(t, Repodata("linux-64", recs))
	// Without the previous document (or with other bytes), every name is
	// encoded again; without the candidates too, Build fails.
	for _, p := range [][]byte{nil, append(bytes.Clone(prev), ' ')} {
		if c.Holds(p) {
			t.Fatal("Holds other bytes than the last document")
		}
		if _, _, err := c.Build("linux-64", names, only(l, names, names), p); !errors.Is(err, ErrCurrentIncomplete) {
			t.Fatalf("without candidates nor the previous document: %v", err)
		}
		got, encoded, err := c.Build("linux-64", names, l, p)
		if want := l.CurrentRepodata("linux-64"); err != nil || !bytes.Equal(got, want) || encoded != len(names) {
			t.Fatalf("without the previous document: %v, %d names encoded of %d; equal: %v", err, encoded, len(names), bytes.Equal(got, want))
		}
		prev = got
	}
	if !c.Holds(prev) {
		t.Fatal("does not hold the last document")
	}
}

// FuzzCurrentCache: a Build after a Build of another document gives the
// bytes of CurrentRepodata of the second alone.
func FuzzCurrentCache(f *testing.F) {
	f.Add(Repodata("noarch", synthRecords(30, "noarch")), Repodata("noarch", synthRecords(31, "noarch")))
	f.Add([]byte(`{"packages":{"a-1-0.tar.bz2":{"x":1},"a-1-0.tar.bz2":{"x":2},"a-2-0.tar.bz2":{"build_number":1}}}`),
		[]byte(`{"packages":{"a-1-0.tar.bz2":{"x":2}},"packages.conda":{"a-1-0.conda":{"y":[1,{"b":null,"a":"\u00e9"}]}}}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var c CurrentCache
		var prev []byte
		var before map[string][32]byte
		for _, doc := range [][]byte{a, b, a} {
			l, names, err := scanLatest(doc)
			if err != nil {
				return
			}
			got, _, err := c.Build("noarch", names, only(l, names, before), prev)
			if err != nil {
				t.Fatal(err)
			}
			if want := l.CurrentRepodata("noarch"); !bytes.Equal(got, want) {
				t.Fatalf("Build:\n%s\nCurrentRepodata:\n%s", got, want)
			}
			prev, before = got, names
		}
	})
}
