package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/condamesh/condamesh/conda/forgegen"
	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"
)

// BenchmarkForgeScale is issue 11's benchmark: a generated conda-forge-
// sized channel (forgegen) behind nginx, a proxy channel and a mirror
// channel of a real condamesh binary over it. Size it with
// CONDAMESH_FORGE_RECORDS (linux-64 records, default 500,000) and
// CONDAMESH_FORGE_NOARCH (noarch records, default a fifth of that):
//
//	CONDAMESH_FORGE_RECORDS=100000 go test ./e2e -run '^$' -bench ForgeScale -benchtime 1x -timeout 60m
//
// It measures and reports, never failing on slowness (requests wait up to
// 15 minutes): the physical references (nginx sending repodata.json,
// `zstd -3 -T0` on it); for each derived index file on a fresh node, the
// first client's time to first byte and to the last byte and the longest
// wait of eight concurrent clients, with the node's peak RSS; the whole
// derived set asked for at once, peak and idle RSS; the first cold
// package's time to first byte against nginx's; mirror planning with an
// includelist of three names; and a one-record upstream change: the time
// until the new repodata.json, .zst and shards are served, the longest
// client wait meanwhile, CPU seconds and derivations. Figures go to
// docs/BENCHMARKS.md ("conda-forge scale").
func BenchmarkForgeScale(b *testing.B) {
	records := envInt(b, "CONDAMESH_FORGE_RECORDS", 500000)
	noarch := envInt(b, "CONDAMESH_FORGE_NOARCH", records/5)
	ng := startNginxLogged(b, true)
	fx := newForgeFixture(b, ng, records, noarch)
	b.Logf("channel: linux-64 %d records (%d MB), noarch %d records; real packages of %v; change: linux-64 record %s",
		records, fx.jsonSize>>20, noarch, fx.real, fx.changed.Filename)

	b.Run("reference", func(b *testing.B) {
		for range b.N {
			r := fetchOnce(context.Background(), ng.url+"/forge/linux-64/repodata.json", false)
			b.ReportMetric(ms(r.total), "nginx-repodata.json-ms")
			b.ReportMetric(ms(timeCmd(b, "zstd", "-3", "-T0", "-q", "-f", "-o", filepath.Join(b.TempDir(), "r.zst"), fx.jsonPath)), "zstd-3-T0-ms")
		}
	})
	for _, file := range []string{"repodata.json", "repodata.json.zst", "repodata_shards.msgpack.zst", "current_repodata.json"} {
		b.Run("cold/"+file, func(b *testing.B) {
			for range b.N {
				s := fx.proxyNode(b, 3600)
				first, longest, bad := coldClients(s.url+"/get/forge/linux-64/"+file, 8, file == "repodata_shards.msgpack.zst")
				b.ReportMetric(ms(first.ttfb), "first-ttfb-ms")
				b.ReportMetric(ms(first.total), "first-total-ms")
				b.ReportMetric(ms(longest), "longest-wait-ms")
				b.ReportMetric(float64(bad), "non-200")
				switch file {
				case "repodata_shards.msgpack.zst":
					// One shard, as a client asks right after the index.
					shard := fx.shardURL(b, s, "linux-64", fx.real[0], first.body)
					first, longest, bad := coldClients(shard, 8, false)
					b.ReportMetric(ms(first.ttfb), "shard-first-ttfb-ms")
					b.ReportMetric(ms(first.total), "shard-first-total-ms")
					b.ReportMetric(ms(longest), "shard-longest-wait-ms")
					b.ReportMetric(float64(bad), "shard-non-200")
				case "repodata.json.zst":
					// The first package, as a client asks after the index.
					fx.firstPackage(b, s)
				}
				b.ReportMetric(procKiB(b, s.cmd.Process.Pid, "VmHWM")/1024, "peak-RSS-MiB")
				logDerivations(b, s)
			}
		})
	}
	b.Run("upstream-shards/cold-package", func(b *testing.B) {
		for range b.N {
			fx.upstreamShards(b)
		}
	})
	b.Run("mirror-plan-includelist-3", func(b *testing.B) {
		for range b.N {
			fx.mirrorPlan(b)
		}
	})
	b.Run("cold-all-then-one-record-change", func(b *testing.B) {
		for range b.N {
			s := fx.proxyNode(b, 3600)
			fx.coldAll(b, s)
			fx.change(b, s)
		}
	})
}

// forgeFixture is the generated upstream: linux-64 and noarch under
// <nginx>/forge, real package files for a few names, and linux-64's
// changed variant beside the root, to be renamed over the original.
type forgeFixture struct {
	ng          *nginx
	ch          *forgegen.Channel
	real        []string // two linux-64 names, one noarch name
	jsonPath    string   // linux-64/repodata.json under the root
	jsonSize    int64
	changedPath string
	changed     forgegen.Record // the changed record, as in the variant
	shardsOnce  sync.Once       // forge-sharded written (upstreamShards)
}

func newForgeFixture(b *testing.B, ng *nginx, records, noarch int) *forgeFixture {
	cfg := forgegen.Config{Seed: 1, Records: records, NoarchRecords: noarch}
	probe, err := forgegen.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	fx := &forgeFixture{ng: ng}
	// Real packages: names with few records (the first with at most 3
	// from the middle of the order on, else the one with the fewest).
	for _, sd := range []string{"linux-64", "linux-64", "noarch"} {
		names := probe.Names(sd)
		best, fewest := "", 0
		for i := len(names) / 2; i < len(names) && fewest != 1; i++ {
			recs, err := probe.NameRecords(sd, names[i])
			if err != nil {
				b.Fatal(err)
			}
			if !slices.Contains(fx.real, names[i]) && (best == "" || len(recs) < fewest) {
				best, fewest = names[i], len(recs)
			}
			if fewest <= 3 && best != "" {
				break
			}
		}
		fx.real = append(fx.real, best)
	}
	cfg.Real = fx.real
	if fx.ch, err = forgegen.New(cfg); err != nil {
		b.Fatal(err)
	}
	if _, err := fx.ch.WriteDir(context.Background(), filepath.Join(ng.root, "forge")); err != nil {
		b.Fatal(err)
	}
	fx.jsonPath = filepath.Join(ng.root, "forge", "linux-64", "repodata.json")
	st, err := os.Stat(fx.jsonPath)
	if err != nil {
		b.Fatal(err)
	}
	fx.jsonSize = st.Size()
	// The changed variant: a record half-way, of a name without real files.
	k := records / 2
	for ; ; k++ {
		r, err := fx.ch.Record("linux-64", k)
		if err != nil {
			b.Fatal(err)
		}
		if !slices.Contains(fx.real, r.Name) {
			break
		}
	}
	cfg.Change = &forgegen.Change{Subdir: "linux-64", Index: k}
	changed, err := forgegen.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if fx.changed, err = changed.Record("linux-64", k); err != nil {
		b.Fatal(err)
	}
	fx.changedPath = filepath.Join(filepath.Dir(ng.root), "changed-repodata.json")
	f, err := os.Create(fx.changedPath)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := changed.WriteRepodata(context.Background(), f, "linux-64", nil); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return fx
}

// proxyNode starts a fresh node with a proxy channel "forge" over the
// fixture, with the given TTL (seconds).
func (fx *forgeFixture) proxyNode(b *testing.B, ttl int) *server {
	s := startServer(b, b.TempDir())
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"forge","private":false,"mirror_channel_url":"%s/forge","mirror_mode":"proxy","ttl":%d}`, fx.ng.url, ttl))
	return s
}

// fetched is one client request.
type fetched struct {
	url, cond   string    // the request: its URL and If-None-Match
	sent        time.Time // when it was sent
	status      int
	ttfb, total time.Duration
	etag        string
	body        []byte
	found       bool // fetchWith's consume found what it looked for
	err         error
}

// forgeClient waits as long as a slow node takes, asks for identity
// encoding and keeps no connection limits of its own.
var forgeClient = &http.Client{Timeout: 15 * time.Minute, Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}}

// fetchOnce GETs url (header pairs after it) and times the first byte and
// the whole answer; with keep, it keeps the body of a 200.
func fetchOnce(ctx context.Context, url string, keep bool, header ...string) fetched {
	if !keep {
		return fetchWith(ctx, url, nil, header...)
	}
	var body []byte
	r := fetchWith(ctx, url, func(rd io.Reader) (bool, error) {
		var err error
		body, err = io.ReadAll(rd)
		return false, err
	}, header...)
	r.body = body
	return r
}

// fetchWith is fetchOnce handing the body of a 200 to consume as it
// arrives (its verdict is the answer's found) rather than keeping it: the
// change's pollers look for the new record in the 315 MB index without
// holding it. The rest of the body is read after consume returns, so that
// total is the whole answer's time.
func fetchWith(ctx context.Context, url string, consume func(io.Reader) (bool, error), header ...string) fetched {
	r := fetched{url: url, sent: time.Now()}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "If-None-Match" {
			r.cond = header[i+1]
		}
	}
	start := r.sent
	trace := &httptrace.ClientTrace{GotFirstResponseByte: func() { r.ttfb = time.Since(start) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", url, nil)
	if err != nil {
		return fetched{err: err}
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := forgeClient.Do(req)
	if err != nil {
		r.err, r.total = err, time.Since(start)
		return r
	}
	defer resp.Body.Close()
	r.status, r.etag = resp.StatusCode, resp.Header.Get("ETag")
	if resp.StatusCode == 200 && consume != nil {
		r.found, r.err = consume(resp.Body)
	}
	if _, err := io.Copy(io.Discard, resp.Body); r.err == nil {
		r.err = err
	}
	r.total = time.Since(start)
	return r
}

// readerContains reports whether r's bytes contain needle, reading r once
// in pieces of at most 1 MiB (never holding it whole).
func readerContains(r io.Reader, needle []byte) (bool, error) {
	buf := make([]byte, 0, 1<<20+len(needle))
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		from := max(len(buf)-(len(needle)-1), 0) // what is new, and the overlap
		buf = buf[:len(buf)+n]
		if bytes.Contains(buf[from:], needle) {
			return true, nil
		}
		if err == io.EOF {
			return false, nil
		} else if err != nil {
			return false, err
		}
		if keep := len(needle) - 1; len(buf) > keep && len(buf) == cap(buf) {
			buf = buf[:copy(buf, buf[len(buf)-keep:])]
		}
	}
}

// coldClients sends one request for url, then, 100 ms later, n-1 more at
// once, and returns the first one's answer (with its body if keep), the
// longest any of them took and how many did not answer 200.
func coldClients(url string, n int, keep bool) (fetched, time.Duration, int) {
	results := make([]fetched, n)
	var wg sync.WaitGroup
	for i := range n {
		if i == 1 {
			time.Sleep(100 * time.Millisecond)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = fetchOnce(context.Background(), url, keep && i == 0)
		}()
	}
	wg.Wait()
	var longest time.Duration
	bad := 0
	for _, r := range results {
		longest = max(longest, r.total)
		if r.status != 200 || r.err != nil {
			bad++
		}
	}
	return results[0], longest, bad
}

// shardIndex decodes a repodata_shards.msgpack.zst.
func shardIndex(tb testing.TB, zst []byte) (base string, shards map[string][]byte) {
	tb.Helper()
	var doc struct {
		Info struct {
			ShardsBaseURL string `msgpack:"shards_base_url"`
		} `msgpack:"info"`
		Shards map[string][]byte `msgpack:"shards"`
	}
	if err := msgpack.Unmarshal(unzstd(tb, zst), &doc); err != nil {
		tb.Fatalf("shard index: %v", err)
	}
	return doc.Info.ShardsBaseURL, doc.Shards
}

func unzstd(tb testing.TB, b []byte) []byte {
	tb.Helper()
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(4<<30))
	if err != nil {
		tb.Fatal(err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(b, nil)
	if err != nil {
		tb.Fatalf("zstd: %v", err)
	}
	return out
}

// shardURL returns the URL of name's shard in the index given.
func (fx *forgeFixture) shardURL(tb testing.TB, s *server, subdir, name string, index []byte) string {
	tb.Helper()
	if index == nil {
		tb.Fatal("no shard index to read")
	}
	base, shards := shardIndex(tb, index)
	sum, ok := shards[name]
	if !ok {
		tb.Fatalf("%s is not in the shard index", name)
	}
	return s.url + "/get/forge/" + subdir + "/" + strings.TrimPrefix(base, "./") + hex.EncodeToString(sum) + ".msgpack.zst"
}

// firstPackage times the cold requests for the real linux-64 packages
// through the proxy against nginx's time to first byte for the same files:
// the very first (the one that finds the record of its file in the index
// first) and the median of all.
func (fx *forgeFixture) firstPackage(b *testing.B, s *server) {
	first, c, d := fx.coldPackages(b, s.url+"/get/forge/linux-64/", fx.ng.url+"/forge/linux-64/", nil)
	b.ReportMetric(ms(first), "package-first-cold-ttfb-ms")
	b.ReportMetric(ms(first-d), "package-first-added-ms")
	b.ReportMetric(ms(c), "package-median-cold-ttfb-ms")
	b.ReportMetric(ms(d), "package-nginx-ttfb-ms")
}

// coldPackages asks proxyBase (cold) and directBase (nginx, three times
// each) for the linux-64 packages of the fixture's two real names, after
// before(name) if set, and returns the first cold time to first byte, the
// median cold one and nginx's median. A wrong answer is an error.
func (fx *forgeFixture) coldPackages(b *testing.B, proxyBase, directBase string, before func(name string)) (first, median, nginx time.Duration) {
	var cold, direct []time.Duration
	for _, name := range fx.real[:2] {
		if before != nil {
			before(name)
		}
		recs, err := fx.ch.NameRecords("linux-64", name)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range recs {
			for range 3 {
				direct = append(direct, fetchOnce(context.Background(), directBase+r.Filename, false).ttfb)
			}
			got := fetchOnce(context.Background(), proxyBase+r.Filename, true)
			if got.status != 200 || sha256Hex(got.body) != r.SHA256 {
				b.Errorf("cold package %s: status %d, err %v", r.Filename, got.status, got.err)
			}
			cold = append(cold, got.ttfb)
		}
	}
	first = cold[0]
	slices.Sort(cold)
	slices.Sort(direct)
	return first, cold[len(cold)/2], direct[len(direct)/2]
}

// coldAll asks a fresh node for the whole derived set of both subdirs at
// once, two clients per file (and a shard once its index is in), and
// reports the time until all were served, the longest wait, peak RSS and
// the RSS once the node has settled.
func (fx *forgeFixture) coldAll(b *testing.B, s *server) {
	files := []string{"repodata.json", "repodata.json.zst", "repodata_shards.msgpack.zst", "current_repodata.json"}
	var mu sync.Mutex
	var longest time.Duration
	bad := 0
	note := func(r fetched) {
		mu.Lock()
		defer mu.Unlock()
		longest = max(longest, r.total)
		if r.status != 200 || r.err != nil {
			bad++
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, sd := range []string{"linux-64", "noarch"} {
		for _, f := range files {
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := fetchOnce(context.Background(), s.url+"/get/forge/"+sd+"/"+f, f == "repodata_shards.msgpack.zst")
					note(r)
					if f == "repodata_shards.msgpack.zst" && r.status == 200 {
						name := fx.real[0]
						if sd == "noarch" {
							name = fx.real[2]
						}
						note(fetchOnce(context.Background(), fx.shardURL(b, s, sd, name, r.body), false))
					}
				}()
			}
		}
	}
	wg.Wait()
	pid := s.cmd.Process.Pid
	b.ReportMetric(ms(time.Since(start)), "all-served-ms")
	b.ReportMetric(ms(longest), "all-longest-wait-ms")
	b.ReportMetric(float64(bad), "all-non-200")
	b.ReportMetric(procKiB(b, pid, "VmHWM")/1024, "all-peak-RSS-MiB")
	b.ReportMetric(settledRSS(b, pid)/1024, "idle-RSS-MiB")
}

// settledRSS waits (at most 90 s) until the process's RSS has stopped
// falling (within 2 % over 5 s) and returns it in KiB.
func settledRSS(tb testing.TB, pid int) float64 {
	var seen []float64
	deadline := time.Now().Add(90 * time.Second)
	for {
		seen = append(seen, procKiB(tb, pid, "VmRSS"))
		if n := len(seen); n > 5 && seen[n-6]-seen[n-1] <= seen[n-1]/50 || time.Now().After(deadline) {
			return seen[len(seen)-1]
		}
		time.Sleep(time.Second)
	}
}

// change swaps linux-64/repodata.json behind nginx for the variant with
// one record changed, sets the channel's TTL to 1 s, and reports the time
// until the new repodata.json, .zst and shards are served, the longest
// client wait meanwhile and the process's CPU seconds and derivations,
// until live and over the 30 s after (TTL 1 s: upstream answers 304),
// with the same clients' longest wait there.
func (fx *forgeFixture) change(b *testing.B, s *server) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := s.url + "/get/forge/linux-64/"
	newHex := fx.changed.SHA256
	newRaw, _ := hex.DecodeString(newHex)
	etags := map[string]string{}
	for _, f := range []string{"repodata.json", "repodata.json.zst", "repodata_shards.msgpack.zst"} {
		r := fetchOnce(ctx, base+f, f == "repodata_shards.msgpack.zst")
		if r.status != 200 {
			b.Fatalf("%s before the change: %d %v", f, r.status, r.err)
		}
		etags[f] = r.etag
		if f == "repodata_shards.msgpack.zst" {
			_, shards := shardIndex(b, r.body)
			etags["shard"] = hex.EncodeToString(shards[fx.changed.Name])
		}
	}

	// A client's wait is its time to first byte (the whole answer of a
	// 315 MB file also measures the transfer on a busy machine: reported
	// apart).
	var mu sync.Mutex
	var longest, longestTotal time.Duration
	var longestReq fetched
	var steady time.Duration // the longest wait once live (steady is on)
	steadyOn := false
	bad := map[string]int{}
	note := func(r fetched) {
		mu.Lock()
		defer mu.Unlock()
		if steadyOn {
			steady = max(steady, r.ttfb)
			return
		}
		if r.ttfb > longest {
			longestReq = r
		}
		longest, longestTotal = max(longest, r.ttfb), max(longestTotal, r.total)
		if r.err != nil || (r.status != 200 && r.status != 304) {
			bad[fmt.Sprint(r.status, r.err)]++
		}
	}
	// Clients that download the .zst and the shard index, each every
	// 200 ms (so that the CPU measured is mostly the node's own work).
	var wg sync.WaitGroup
	for _, f := range []string{"repodata.json.zst", "repodata_shards.msgpack.zst"} {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					r := fetchOnce(ctx, base+f, false)
					if ctx.Err() == nil {
						note(r)
					}
					select {
					case <-ctx.Done():
					case <-time.After(200 * time.Millisecond):
					}
				}
			}()
		}
	}

	pid := s.cmd.Process.Pid
	derived := func() int { return strings.Count(s.logs.String(), "derived index files") }
	upstream := func() int { return fx.ng.count(b, "/forge/linux-64/repodata.json") }
	resetPeak(b, pid)
	d0, u0 := derived(), upstream()
	// A new upstream file: a new mtime (nginx's ETag and Last-Modified
	// come from it; the changed file has the same size as the old one).
	now := time.Now()
	if err := os.Chtimes(fx.changedPath, now, now); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(fx.changedPath, fx.jsonPath); err != nil {
		b.Fatal(err)
	}
	// The rest of the machine: this process's clients and nginx (its
	// master and workers) share the node's two cores.
	harness := func() float64 { return cpuSeconds(b, os.Getpid()) + treeCPUSeconds(b, fx.ng.cmd.Process.Pid) }
	start, cpu0, h0 := time.Now(), cpuSeconds(b, pid), harness()
	s.mustDo(200, "PATCH", "/api/channels/forge", `{"ttl": 1}`)
	b.Logf("ttl 1 s at %s", start.UTC().Format("15:04:05.000"))

	// Poll each file with its old validator until the new one is served.
	live := map[string]time.Duration{}
	// The checks read the bodies as they arrive (the harness holds neither
	// the 315 MB index nor its decompression).
	check := map[string]func(body io.Reader) (bool, error){
		"repodata.json": func(body io.Reader) (bool, error) { return readerContains(body, []byte(newHex)) },
		"repodata.json.zst": func(body io.Reader) (bool, error) {
			d, err := zstd.NewReader(body, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(4<<30))
			if err != nil {
				return false, err
			}
			defer d.Close()
			return readerContains(d, []byte(newHex))
		},
		"repodata_shards.msgpack.zst": func(rd io.Reader) (bool, error) {
			body, err := io.ReadAll(rd)
			if err != nil {
				return false, err
			}
			_, shards := shardIndex(b, body)
			if hex.EncodeToString(shards[fx.changed.Name]) == etags["shard"] {
				return false, nil
			}
			r := fetchOnce(ctx, fx.shardURL(b, s, "linux-64", fx.changed.Name, body), true)
			note(r)
			return r.status == 200 && bytes.Contains(unzstd(b, r.body), newRaw), nil
		},
	}
	// Each file polled on its own (the checks of a 315 MB body take the
	// client a while): a file is live by the time the request that got
	// it was sent.
	deadline := start.Add(10 * time.Minute)
	var liveMu sync.Mutex
	var pollers sync.WaitGroup
	for f, ok := range check {
		etag := etags[f]
		pollers.Add(1)
		go func() {
			defer pollers.Done()
			for time.Now().Before(deadline) {
				sent := time.Now()
				r := fetchWith(ctx, base+f, ok, "If-None-Match", etag)
				note(r)
				if r.status == 200 {
					if r.found {
						liveMu.Lock()
						live[f] = sent.Sub(start)
						liveMu.Unlock()
						b.Logf("%s live by %s (sent then; the answer took %v)", f, sent.UTC().Format("15:04:05.000"), r.total)
						return
					}
					etag = r.etag
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	pollers.Wait()
	lastLive := time.Duration(0)
	for _, v := range live {
		lastLive = max(lastLive, v)
	}
	allLive := lastLive
	cpuLive, harnessLive := cpuSeconds(b, pid)-cpu0, harness()-h0
	dLive, uLive := derived()-d0, upstream()-u0
	for f, unit := range map[string]string{"repodata.json": "live-json-ms", "repodata.json.zst": "live-zst-ms", "repodata_shards.msgpack.zst": "live-shards-ms"} {
		v, ok := live[f]
		if !ok {
			v = -time.Millisecond // not within the deadline
		}
		b.ReportMetric(ms(v), unit)
	}
	b.ReportMetric(ms(allLive), "all-live-ms")
	b.ReportMetric(cpuLive, "cpu-s-until-live")
	b.ReportMetric(harnessLive, "harness-cpu-s-until-live")
	b.ReportMetric(float64(dLive), "derivations-until-live")
	b.ReportMetric(float64(uLive), "upstream-repodata-requests-until-live")
	// Steady state: TTL 1 s, upstream unchanged (it answers 304). The
	// same clients' longest wait there is the reference for the change's.
	mu.Lock()
	steadyOn = true
	mu.Unlock()
	cpu1, d1, u1 := cpuSeconds(b, pid), derived(), upstream()
	time.Sleep(30 * time.Second)
	b.ReportMetric(cpuSeconds(b, pid)-cpu1, "cpu-s-next-30s")
	b.ReportMetric(float64(derived()-d1), "derivations-next-30s")
	b.ReportMetric(float64(upstream()-u1), "upstream-repodata-requests-next-30s")
	cancel()
	wg.Wait()
	b.ReportMetric(ms(longest), "change-longest-wait-ms")
	if longest > 0 {
		b.Logf("longest wait during the change: %v, %s (If-None-Match %q) sent at %s, status %d", longest, longestReq.url, longestReq.cond, longestReq.sent.UTC().Format("15:04:05.000"), longestReq.status)
	}
	b.ReportMetric(ms(steady), "steady-longest-wait-ms")
	b.ReportMetric(ms(longestTotal), "change-longest-answer-ms")
	b.ReportMetric(procKiB(b, pid, "VmHWM")/1024, "change-peak-RSS-MiB")
	n := 0
	for _, c := range bad {
		n += c
	}
	b.ReportMetric(float64(n), "change-non-200-304")
	logDerivations(b, s)
	if n > 0 {
		b.Logf("answers other than 200/304 during the change: %v", bad)
	}
}

// mirrorPlan creates a mirror channel of the fixture with an includelist
// of the three real names on a fresh node, and reports the planning time
// (from the node's log), the whole sync and the peak RSS.
func (fx *forgeFixture) mirrorPlan(b *testing.B) {
	s := startServer(b, b.TempDir())
	list := `["` + strings.Join(fx.real, `","`) + `"]`
	start := time.Now()
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"forge-mirror","private":false,"mirror_channel_url":"%s/forge","mirror_mode":"mirror","metadata":{"includelist":%s}}`, fx.ng.url, list))
	id := s.latestJob("synchronize_repodata").ID
	var j jobJSON
	for time.Since(start) < 15*time.Minute {
		decodeJSON(b, s.mustDo(200, "GET", fmt.Sprintf("/api/jobs/%d", id), ""), &j)
		if j.Status == "success" || j.Status == "failed" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	if j.Status != "success" {
		b.Logf("mirror sync: job %s", j.Status)
	}
	b.ReportMetric(ms(took), "sync-ms")
	if m := plannedRe.FindStringSubmatch(s.logs.String()); m != nil {
		if d, err := time.ParseDuration(m[1]); err == nil {
			b.ReportMetric(ms(d), "planning-ms")
		}
	}
	b.ReportMetric(procKiB(b, s.cmd.Process.Pid, "VmHWM")/1024, "peak-RSS-MiB")
}

var plannedRe = regexp.MustCompile(`mirror sync planned.* took=(\S+)`)

// logDerivations logs the node's derivations with their phases, and its
// downloads of an upstream repodata.json.
func logDerivations(b *testing.B, s *server) {
	for _, line := range strings.Split(s.logs.String(), "\n") {
		if strings.Contains(line, "derived index files") || strings.Contains(line, "derive index files") || strings.Contains(line, "fetched upstream index") {
			b.Log(line)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// procKiB returns a "<field>: N kB" line of /proc/<pid>/status.
func procKiB(tb testing.TB, pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	m := regexp.MustCompile(field + `:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		tb.Fatalf("no %s in /proc/%d/status", field, pid)
	}
	kb, _ := strconv.Atoi(string(m[1]))
	return float64(kb)
}

// resetPeak resets the process's VmHWM to its current RSS.
func resetPeak(tb testing.TB, pid int) {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		tb.Fatalf("reset peak RSS: %v", err)
	}
}

// cpuSeconds returns the process's user and system CPU time so far.
func cpuSeconds(tb testing.TB, pid int) float64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// pid (comm) state ...: utime and stime are fields 14 and 15, the
	// 12th and 13th after the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks()
}

// treeCPUSeconds is cpuSeconds of pid and of its children (nginx's
// workers).
func treeCPUSeconds(tb testing.TB, pid int) float64 {
	tb.Helper()
	total := cpuSeconds(tb, pid)
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue // gone meanwhile
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			child, _ := strconv.Atoi(filepath.Base(filepath.Dir(st)))
			total += cpuSeconds(tb, child)
		}
	}
	return total
}

// clockTicks is the kernel's USER_HZ (getconf CLK_TCK).
var clockTicks = sync.OnceValue(func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || v <= 0 {
		return 100
	}
	return v
})

// TestReaderContains holds the benchmark's streaming search to
// bytes.Contains: needles across the points where its buffer is cut,
// absent ones, whole and one-byte reads.
func TestReaderContains(t *testing.T) {
	hay := make([]byte, 3<<20)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(hay)
	const n = 16
	cut := 1<<20 + n // the first cut of a buffer of 1 MiB + len(needle)
	for _, c := range []struct {
		name   string
		needle []byte
	}{
		{"at the start", hay[:n]},
		{"across the first cut", hay[cut-5 : cut-5+n]},
		{"right after it", hay[cut : cut+n]},
		{"across a later cut", hay[2*cut-(n-1)-3 : 2*cut-(n-1)-3+n]},
		{"at the end", hay[len(hay)-n:]},
		{"absent", []byte("not in random bytes at all")},
	} {
		want := bytes.Contains(hay, c.needle)
		if c.name != "absent" && !want {
			t.Fatalf("%s: bad case", c.name)
		}
		for _, r := range []struct {
			name string
			r    io.Reader
		}{{"whole", bytes.NewReader(hay)}, {"one byte at a time", iotest.OneByteReader(bytes.NewReader(hay))}} {
			if got, err := readerContains(r.r, c.needle); err != nil || got != want {
				t.Errorf("%s, %s: %v (%v), want %v", c.name, r.name, got, err, want)
			}
		}
	}
}

// upstreamShards times a cold proxy over an upstream that publishes
// sharded repodata, as conda-forge does (<nginx>/forge-sharded: the
// fixture's files plus linux-64's shards, written once): a client reads
// the shard index and a real name's shard, then asks for that name's
// packages. Each package's record comes from the upstream's shard, so the
// upstream repodata.json is never fetched (its requests are reported).
func (fx *forgeFixture) upstreamShards(b *testing.B) {
	root := filepath.Join(fx.ng.root, "forge-sharded")
	fx.shardsOnce.Do(func() {
		start := time.Now()
		for _, sd := range []string{"linux-64", "noarch"} {
			src := filepath.Join(fx.ng.root, "forge", sd)
			ents, err := os.ReadDir(src)
			if err != nil {
				b.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(root, sd), 0o755); err != nil {
				b.Fatal(err)
			}
			for _, e := range ents {
				if err := os.Symlink(filepath.Join(src, e.Name()), filepath.Join(root, sd, e.Name())); err != nil {
					b.Fatal(err)
				}
			}
		}
		n, err := fx.ch.WriteShards(context.Background(), root, "linux-64")
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("upstream shards: %d for linux-64, written in %v", n, time.Since(start).Round(time.Millisecond))
	})
	s := startServer(b, b.TempDir())
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"forges","private":false,"mirror_channel_url":"%s/forge-sharded","mirror_mode":"proxy","ttl":3600}`, fx.ng.url))
	base := s.url + "/get/forges/linux-64/"
	index := fetchOnce(context.Background(), base+"repodata_shards.msgpack.zst", true)
	if index.status != 200 {
		b.Fatalf("shard index: %d %v", index.status, index.err)
	}
	b.ReportMetric(ms(index.ttfb), "shard-index-ttfb-ms")
	_, shards := shardIndex(b, index.body)
	first, c, d := fx.coldPackages(b, base, fx.ng.url+"/forge-sharded/linux-64/", func(name string) {
		shard := fetchOnce(context.Background(), base+"shards/"+hex.EncodeToString(shards[name])+".msgpack.zst", false)
		if shard.status != 200 {
			b.Fatalf("shard of %s: %d %v", name, shard.status, shard.err)
		}
	})
	b.ReportMetric(ms(first), "package-first-cold-ttfb-ms")
	b.ReportMetric(ms(first-d), "package-first-added-ms")
	b.ReportMetric(ms(c-d), "package-median-added-ms")
	b.ReportMetric(ms(d), "package-nginx-ttfb-ms")
	b.ReportMetric(float64(fx.ng.count(b, "/forge-sharded/linux-64/repodata.json")), "upstream-repodata-requests")
	b.ReportMetric(procKiB(b, s.cmd.Process.Pid, "VmHWM")/1024, "peak-RSS-MiB")
}
