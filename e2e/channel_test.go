package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/vmihailenco/msgpack/v5"
)

// upstreamChannel is a conda channel written to a directory (served by
// nginx in the tests), made of real archives built by condatest and indexed
// with the conda package's generators.
type upstreamChannel struct {
	dir   string                    // channel root
	files map[string][]byte         // "subdir/filename" -> bytes
	recs  map[string][]conda.Record // subdir -> records
	about map[string]map[string]any // filename -> about
}

// newUpstreamChannel writes n packages: lib%03d for noarch (every third),
// linux-64 and osx-arm64 (the others), alternating .conda and .tar.bz2,
// each depending on a lower-numbered one so that solving the top of the
// chain pulls several packages from both subdirs.
func newUpstreamChannel(t testing.TB, dir string, n int) *upstreamChannel {
	u := &upstreamChannel{dir: dir, files: map[string][]byte{}, recs: map[string][]conda.Record{}, about: map[string]map[string]any{}}
	for i := range n {
		var deps []string
		if i > 0 {
			deps = []string{fmt.Sprintf("lib%03d >=1.0", i/2)}
		}
		subdirs := []string{"linux-64", "osx-arm64"}
		if i%3 == 0 {
			subdirs = []string{"noarch"}
		}
		for _, sd := range subdirs {
			spec := condatest.Spec{Name: fmt.Sprintf("lib%03d", i), Version: "1.0", Build: "h0_0", Subdir: sd, Depends: deps,
				Files: map[string]string{fmt.Sprintf("share/lib%03d/%s.txt", i, sd): fmt.Sprintf("lib %d for %s\n", i, sd)}}
			if sd == "noarch" {
				spec.Noarch = "generic"
			}
			ext := ".tar.bz2"
			if i%2 == 0 {
				ext = ".conda"
			}
			u.add(t, sd, spec, ext)
		}
	}
	u.write(t)
	return u
}

// add builds one package into the channel (call write afterwards).
func (u *upstreamChannel) add(t testing.TB, sd string, spec condatest.Spec, ext string) {
	var b []byte
	if ext == ".conda" {
		b = condatest.Conda(t, spec)
	} else {
		b = condatest.TarBz2(t, spec)
	}
	fn := condatest.Filename(spec, ext)
	u.put(t, sd, fn, b)
}

// put replaces or adds one file.
func (u *upstreamChannel) put(t testing.TB, sd, fn string, b []byte) {
	info, err := conda.ReadPackage(bytes.NewReader(b), int64(len(b)), fn)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := conda.HashReader(bytes.NewReader(b))
	u.remove(sd, fn)
	u.files[sd+"/"+fn] = b
	u.recs[sd] = append(u.recs[sd], conda.NewRecord(info, d))
	u.about[fn] = conda.ChannelMeta(info)
}

// remove drops one file (call write afterwards).
func (u *upstreamChannel) remove(sd, fn string) {
	delete(u.files, sd+"/"+fn)
	recs := u.recs[sd][:0]
	for _, r := range u.recs[sd] {
		if r.Filename != fn {
			recs = append(recs, r)
		}
	}
	u.recs[sd] = recs
}

// write (re)writes every package file, repodata.json and channeldata.json.
// It publishes no .zst, .bz2 or shards: proxies must derive them.
func (u *upstreamChannel) write(t testing.TB) {
	_ = os.RemoveAll(u.dir)
	var subdirs []string
	for sd := range u.recs {
		subdirs = append(subdirs, sd)
	}
	sort.Strings(subdirs)
	for p, b := range u.files {
		writeFile(t, filepath.Join(u.dir, p), b)
	}
	for _, sd := range subdirs {
		writeFile(t, filepath.Join(u.dir, sd, "repodata.json"), conda.Repodata(sd, u.recs[sd]))
	}
	writeFile(t, filepath.Join(u.dir, "channeldata.json"), conda.ChannelData(subdirs, u.recs, u.about))
}

// writeShards publishes every subdir's sharded repodata (CEP-16) too, as
// conda-forge does (call after write, which removes it): each subdir's
// shards where bases puts them (its shards_base_url; "./shards/" if
// absent, as rattler-index; "" is beside the index, as conda-index).
func (u *upstreamChannel) writeShards(t testing.TB, bases map[string]string) {
	for sd, recs := range u.recs {
		index, shards, err := conda.Shards(sd, recs)
		if err != nil {
			t.Fatal(err)
		}
		base, ok := bases[sd]
		if !ok {
			base = "./shards/"
		}
		if base != "./shards/" {
			digests, _, err := conda.ShardIndexDigests(index)
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string][]byte{}
			for name, d := range digests {
				byName[name] = bytes.Clone(d[:])
			}
			raw, err := msgpack.Marshal(map[string]any{"info": map[string]any{"subdir": sd, "base_url": "", "shards_base_url": base}, "shards": byName, "version": 1})
			if err != nil {
				t.Fatal(err)
			}
			index = conda.AppendZstd(nil, raw)
		}
		writeFile(t, filepath.Join(u.dir, sd, "repodata_shards.msgpack.zst"), index)
		for h, b := range shards {
			writeFile(t, filepath.Join(u.dir, sd, base, h+".msgpack.zst"), b)
		}
	}
}

// sha returns the sha256 of a file of the channel.
func (u *upstreamChannel) sha(path string) string { return sha256Hex(u.files[path]) }

func writeFile(t testing.TB, p string, b []byte) {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// decodeJSON is a small helper for API answers.
func decodeJSON(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}
