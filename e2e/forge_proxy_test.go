package e2e

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/forgegen"
	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"
)

// TestForgeProxyAtScale: a proxy channel over a generated conda-forge-like
// channel of 100,000 linux-64 records behind nginx (issue 11's CI size).
// Cold concurrent requests for the .zst, the shard index and
// current_repodata.json all answer 200, and what they answer is the
// upstream's content; a real package is served by its record without the
// index being derived again. Then one
// upstream record changes: clients polling meanwhile get the previous
// complete set (every shard an index they got names is served), the new
// set comes with exactly one shard rebuilt, and later upstream 304s derive
// nothing.
func TestForgeProxyAtScale(t *testing.T) {
	ng := startNginx(t)
	cfg := forgegen.Config{Seed: 5, Records: 100_000, NoarchRecords: 20_000}
	gen, real := forgeWithPyExt(t, ng, "forge", cfg)
	cfg.Real = []string{real} // for the changed variant below
	s := startServer(t, t.TempDir())
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"cf","private":false,"mirror_channel_url":"%s/forge","mirror_mode":"proxy","ttl":3600}`, ng.url))
	base := s.url + "/get/cf/linux-64/"
	upstreamJSON, err := os.ReadFile(filepath.Join(ng.root, "forge", "linux-64", "repodata.json"))
	if err != nil {
		t.Fatal(err)
	}

	// Cold, concurrent.
	files := []string{"repodata.json.zst", "repodata_shards.msgpack.zst", "current_repodata.json"}
	got := map[string][]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 4*len(files))
	for range 4 {
		for _, f := range files {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, body := httpGet(base + f)
				if code != 200 {
					errs <- fmt.Errorf("cold %s: %d", f, code)
					return
				}
				mu.Lock()
				got[f] = body
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if b := unzst(t, got["repodata.json.zst"]); !bytes.Equal(b, upstreamJSON) {
		t.Fatal("repodata.json.zst does not decode to the upstream's repodata.json")
	}
	var cur struct {
		Packages      map[string]json.RawMessage `json:"packages"`
		PackagesConda map[string]json.RawMessage `json:"packages.conda"`
	}
	if err := json.Unmarshal(got["current_repodata.json"], &cur); err != nil || len(cur.Packages)+len(cur.PackagesConda) < len(gen.Names("linux-64")) {
		t.Fatalf("current_repodata.json: %v, %d records for %d names", err, len(cur.Packages)+len(cur.PackagesConda), len(gen.Names("linux-64")))
	}
	index := decodeShardIndex(t, got["repodata_shards.msgpack.zst"])
	names := gen.Names("linux-64")
	if len(index) != len(names) {
		t.Fatalf("shard index names %d names, upstream has %d", len(index), len(names))
	}
	for i, name := range names {
		if i%97 != 0 && name != real {
			continue // a sample
		}
		want, err := gen.NameRecords("linux-64", name)
		if err != nil {
			t.Fatal(err)
		}
		code, body := httpGet(base + "shards/" + index[name] + ".msgpack.zst")
		if code != 200 {
			t.Fatalf("shard of %s: %d", name, code)
		}
		recs := decodeShard(t, body)
		if len(recs) != len(want) {
			t.Fatalf("shard of %s: %d records, upstream %d", name, len(recs), len(want))
		}
		for _, w := range want {
			if hex.EncodeToString(recs[w.Filename].SHA256) != w.SHA256 || recs[w.Filename].Size != w.Size {
				t.Fatalf("shard of %s: %s differs from upstream", name, w.Filename)
			}
		}
	}
	derived := func() []string {
		return regexp.MustCompile(`derived index files from upstream repodata.*subdir=linux-64.*shards_built=(\d+)`).FindAllString(s.logs.String(), -1)
	}
	if n := len(derived()); n != 1 {
		t.Fatalf("%d derivations of linux-64, want 1", n)
	}

	// A real package: by its record, the index not derived again.
	recs, _ := gen.NameRecords("linux-64", real)
	var pkg forgegen.Record
	for _, r := range recs {
		if r.Package != nil {
			pkg = r
		}
	}
	if pkg.Filename == "" {
		t.Fatalf("no real package of %s", real)
	}
	if body := download(t, base+pkg.Filename); sha256Hex(body) != pkg.SHA256 {
		t.Fatalf("%s: wrong bytes through the proxy", pkg.Filename)
	}
	if n := len(derived()); n != 1 {
		t.Fatalf("the package request derived the index again (%d derivations)", n)
	}

	// One record changes upstream; the TTL drops to 1 s.
	cfg.Change = &forgegen.Change{Subdir: "linux-64", Index: 12345}
	changed, err := forgegen.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(ng.root, "forge-next")
	if _, err := changed.WriteDir(t.Context(), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(tmp, "linux-64", "repodata.json"), filepath.Join(ng.root, "forge", "linux-64", "repodata.json")); err != nil {
		t.Fatal(err)
	}
	oldIndex := got["repodata_shards.msgpack.zst"]
	s.mustDo(200, "PATCH", "/api/channels/cf", `{"ttl": 1}`)
	stop := make(chan struct{})
	pollErrs := make(chan error, 16)
	for range 3 {
		wg.Add(1)
		go func() { // clients: index, then its shards, never a 404 or 5xx
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code, body := httpGet(base + "repodata_shards.msgpack.zst")
				if code != 200 {
					pollErrs <- fmt.Errorf("shard index during the change: %d", code)
					return
				}
				idx := decodeShardIndex(t, body)
				for _, n := range []string{names[i%len(names)], names[(i*31)%len(names)]} {
					if code, _ := httpGet(base + "shards/" + idx[n] + ".msgpack.zst"); code != 200 {
						pollErrs <- fmt.Errorf("shard of %s named by a served index: %d", n, code)
						return
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	waitFor(t, 120*time.Second, "the new shard index", func() bool {
		_, body := httpGet(base + "repodata_shards.msgpack.zst")
		return len(body) > 0 && !bytes.Equal(body, oldIndex)
	})
	close(stop)
	wg.Wait()
	close(pollErrs)
	for err := range pollErrs {
		t.Fatal(err)
	}
	ds := derived()
	if len(ds) != 2 || !strings.HasSuffix(ds[1], "shards_built=1") {
		t.Fatalf("derivations after the change: %q, want a second one building 1 shard", ds)
	}
	// ... having transcoded only the changed name's records.
	if !strings.Contains(ds[1], `mode="changed names only (1)"`) {
		t.Fatalf("the derivation after the change: %q, want one transcoding the changed name only", ds[1])
	}
	// The upstream now answers 304 (TTL 1 s): nothing more is derived.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if code, _ := httpGet(base + "repodata.json.zst"); code != 200 {
			t.Fatalf(".zst after the change: %d", code)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(derived()); n != 2 {
		t.Fatalf("%d derivations after upstream 304s, want 2", n)
	}

	// rattler solves the real Python extension through the proxy of all
	// 100k records, via the shards and via the whole repodata.json. The
	// wasm rattler under Node takes minutes for this size (from nginx
	// as well; three and a half via the ~3,000 shards of the generated
	// dependency closure): the bound is generous.
	for _, opt := range []solveOptions{{Timeout: 10 * time.Minute}, {NoShards: true, Timeout: 10 * time.Minute}} {
		start := time.Now()
		sol, fetched, err := solveWith(t, opt, []string{real}, []string{s.url + "/get/cf"}, []string{"linux-64", "noarch"})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("rattler solve (no shards: %v): %d requests, %v", opt.NoShards, len(fetched), time.Since(start))
		checkProxiedSolve(t, s, real, sol, fetched, opt)
	}
}

func httpGet(url string) (int, []byte) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return 0, nil
	}
	return resp.StatusCode, b.Bytes()
}

func unzst(t *testing.T, b []byte) []byte {
	t.Helper()
	d, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(1<<30))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out, err := d.DecodeAll(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func decodeShardIndex(t *testing.T, b []byte) map[string]string {
	t.Helper()
	var idx struct {
		Shards map[string][]byte `msgpack:"shards"`
	}
	if err := msgpack.Unmarshal(unzst(t, b), &idx); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(idx.Shards))
	for n, h := range idx.Shards {
		out[n] = hex.EncodeToString(h)
	}
	return out
}

type shardRecord struct {
	SHA256 []byte `msgpack:"sha256"`
	Size   int64  `msgpack:"size"`
}

func decodeShard(t *testing.T, b []byte) map[string]shardRecord {
	t.Helper()
	var sh struct {
		Packages      map[string]shardRecord `msgpack:"packages"`
		PackagesConda map[string]shardRecord `msgpack:"packages.conda"`
	}
	if err := msgpack.Unmarshal(unzst(t, b), &sh); err != nil {
		t.Fatal(err)
	}
	out := sh.PackagesConda
	if out == nil {
		out = map[string]shardRecord{}
	}
	for k, v := range sh.Packages {
		out[k] = v
	}
	return out
}

// TestForgeProxySolves: rattler solves a Python extension of a generated
// conda-forge-like channel through a proxy of it (with the shards the proxy
// derives), and the package it downloads through the proxy is the one its
// record names. (The wasm rattler under Node does not solve the 100,000
// records of TestForgeProxyAtScale within minutes even straight from nginx;
// this channel is smaller.)
func TestForgeProxySolves(t *testing.T) {
	ng := startNginx(t)
	_, name := forgeWithPyExt(t, ng, "forge", forgegen.Config{Seed: 11, Records: 3000, NoarchRecords: 600})
	for _, tc := range []struct {
		how string
		opt solveOptions
	}{
		{"via shards", solveOptions{}},
		{"via repodata.json", solveOptions{NoShards: true}},
	} {
		t.Run(tc.how, func(t *testing.T) {
			s := startServer(t, t.TempDir()) // a cold proxy each
			s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"cf","private":false,"mirror_channel_url":"%s/forge","mirror_mode":"proxy"}`, ng.url))
			sol, fetched, err := solveWith(t, tc.opt, []string{name}, []string{s.url + "/get/cf"}, []string{"linux-64", "noarch"})
			if err != nil {
				t.Fatal(err)
			}
			checkProxiedSolve(t, s, name, sol, fetched, tc.opt)
		})
	}
}

// checkProxiedSolve checks that a rattler solve through proxy s read the
// index the way opt says, and that name's package downloads through the
// proxy with the bytes of its record.
func checkProxiedSolve(t *testing.T, s *server, name string, sol []solved, fetched []string, opt solveOptions) {
	t.Helper()
	var shards, whole int
	for _, u := range fetched {
		switch {
		case strings.HasSuffix(u, "/repodata_shards.msgpack.zst") && !opt.NoShards, strings.Contains(u, "/shards/"):
			shards++
		case strings.HasSuffix(u, "/repodata.json") || strings.HasSuffix(u, "/repodata.json.zst"):
			whole++
		}
	}
	if opt.NoShards && (shards != 0 || whole == 0) || !opt.NoShards && (shards == 0 || whole != 0) {
		t.Fatalf("read %d shard files and %d whole indexes (no shards: %v): %v", shards, whole, opt.NoShards, fetched)
	}
	for _, p := range sol {
		if p.Name != name {
			continue
		}
		if !strings.HasPrefix(p.URL, s.url+"/get/cf/") {
			t.Fatalf("%s resolved to %s, not through the proxy", p.Filename, p.URL)
		}
		if body := download(t, p.URL); sha256Hex(body) != p.SHA256 || int64(len(body)) != p.Size {
			t.Fatalf("%s: the proxy served other bytes than its record", p.Filename)
		}
		if !strings.Contains(s.logs.String(), "derived index files from upstream repodata") {
			t.Fatal("the solve did not go through derived files")
		}
		return
	}
	t.Fatalf("solution %v lacks %s", sol, name)
}
