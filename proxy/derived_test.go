package proxy_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/testlog"
	"github.com/condamesh/condamesh/proxy"
	"github.com/condamesh/condamesh/upstream"
	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"
)

// manyNames is an upstream linux-64 index of names × versions records
// plus the rig's real package, and the record at k changed when change is
// set (a dependency added).
func manyNames(r *rig, names, versions int, change int) []byte {
	var recs []conda.Record
	for i := range names * versions {
		name := fmt.Sprintf("name%03d", i%names)
		fn := fmt.Sprintf("%s-1.%d-0.conda", name, i/names)
		rec := rawRecord("linux-64", fn, []byte(fn))
		if i == change {
			rec.Fields["depends"] = []any{"changed >=1"}
		}
		recs = append(recs, rec)
	}
	info, _ := conda.ReadPackage(bytes.NewReader(r.pkg), int64(len(r.pkg)), "pkg-1.0-0.tar.bz2")
	d, _ := conda.HashReader(bytes.NewReader(r.pkg))
	recs = append(recs, conda.NewRecord(info, d))
	return conda.Repodata("linux-64", recs)
}

func (r *rig) publish(path string, b []byte) {
	r.up.mu.Lock()
	defer r.up.mu.Unlock()
	r.up.files["/c/"+path] = b
}

func unzstd(t *testing.T, b []byte) []byte {
	t.Helper()
	d, _ := zstd.NewReader(nil)
	defer d.Close()
	raw, err := d.DecodeAll(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// shardIndex decodes a served shard index into name -> shard hex.
func shardIndex(t *testing.T, b []byte) map[string]string {
	t.Helper()
	raw := unzstd(t, b)
	var idx struct {
		Shards map[string][]byte `msgpack:"shards"`
	}
	if err := msgpack.Unmarshal(raw, &idx); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for n, h := range idx.Shards {
		out[n] = hex.EncodeToString(h)
	}
	return out
}

// TestDerivedSetIsIncremental: the derived set is built once per upstream
// version; a one-record upstream change rebuilds that name's shard only
// (the others keep their files); an upstream 304 derives nothing; a
// package is looked up in its name's shard without parsing the index
// again; a shard of the new index is served, and so is the shard it
// replaced (clients holding the older index).
func TestDerivedSetIsIncremental(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoScanWhileFetching=%v", off), func(t *testing.T) {
			testDerivedSetIsIncremental(t, newRigWith(t, func(c *proxy.Config) { c.NoScanWhileFetching = off }))
		})
	}
}

func testDerivedSetIsIncremental(t *testing.T, r *rig) {
	const names = 50
	r.publish("linux-64/repodata.json", manyNames(r, names, 4, -1))
	_, ib, err := r.get(t, "linux-64/repodata_shards.msgpack.zst")
	if err != nil {
		t.Fatal(err)
	}
	before := shardIndex(t, ib)
	if len(before) != names+1 || r.p.Derivations() != 1 || r.p.ShardsBuilt() != names+1 {
		t.Fatalf("%d names, %d derivations, %d shards built", len(before), r.p.Derivations(), r.p.ShardsBuilt())
	}
	for n, h := range before {
		if _, _, err := r.get(t, "linux-64/shards/"+h+".msgpack.zst"); err != nil {
			t.Fatalf("shard of %s: %v", n, err)
		}
	}
	// A package: its record comes from its shard, no parse of the index.
	if _, b, err := r.get(t, "linux-64/pkg-1.0-0.tar.bz2"); err != nil || !bytes.Equal(b, r.pkg) {
		t.Fatalf("package: %v", err)
	}
	if r.p.Derivations() != 1 {
		t.Fatal("a package request derived the index again")
	}

	if got := r.p.CurrentNamesEncoded(); got != names+1 {
		t.Fatalf("current_repodata.json encoded %d names, want %d", got, names+1)
	}

	// One record changes upstream (name007's latest version).
	changed := manyNames(r, names, 4, 7+3*names)
	r.publish("linux-64/repodata.json", changed)
	r.now.Add(61)
	if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil { // revalidates in the background
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return r.p.Derivations() == 2 })
	if built := r.p.ShardsBuilt() - (names + 1); built != 1 {
		t.Fatalf("a one-record change built %d shards, want 1", built)
	}
	if got := r.p.CurrentNamesEncoded() - (names + 1); got != 1 {
		t.Fatalf("a one-record change encoded %d names of current_repodata.json again, want 1", got)
	}
	// Only the changed name's records were transcoded (diffscan.go).
	if got := r.p.RecordsTranscoded() - (names*4 + 1); got != 4 {
		t.Fatalf("a one-record change transcoded %d records, want the 4 of its name", got)
	}
	var recs []conda.Record
	if _, err := conda.ScanRepodata(changed, func(rec conda.Record) error { recs = append(recs, rec); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, cur, err := r.get(t, "linux-64/current_repodata.json"); err != nil || !bytes.Equal(cur, conda.CurrentRepodata("linux-64", recs)) {
		t.Fatalf("current_repodata.json after the change: %v\n%s", err, cur)
	}
	_, ib, err = r.get(t, "linux-64/repodata_shards.msgpack.zst")
	if err != nil {
		t.Fatal(err)
	}
	after := shardIndex(t, ib)
	for n, h := range after {
		if (h != before[n]) != (n == "name007") {
			t.Fatalf("shard of %s: %s before, %s after", n, before[n], h)
		}
	}
	for _, h := range []string{after["name007"], before["name007"]} {
		if _, _, err := r.get(t, "linux-64/shards/"+h+".msgpack.zst"); err != nil {
			t.Fatalf("shard %s: %v", h, err)
		}
	}

	// Past the TTL again, the upstream answers 304: nothing is derived.
	r.now.Add(61)
	inm := r.up.inm.Load()
	if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool {
		e, err := r.cat.ProxyEntry(context.Background(), "px", "linux-64/repodata.json")
		return r.up.inm.Load() > inm && err == nil && e.ValidatedUnix == r.now.Load()
	})
	if _, _, err := r.get(t, "linux-64/repodata_shards.msgpack.zst"); err != nil || r.p.Derivations() != 2 || r.p.ShardsBuilt() != names+2 {
		t.Fatalf("after a 304: %v, %d derivations, %d shards built", err, r.p.Derivations(), r.p.ShardsBuilt())
	}

	// Most records change (a new dependency everywhere): the derivation
	// scans the whole index again, and gets it right.
	var most []conda.Record
	if _, err := conda.ScanRepodata(changed, func(rec conda.Record) error {
		if rec.Name() != "name000" {
			rec.Fields["depends"] = []any{"everything >=2"}
		}
		most = append(most, rec)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r.publish("linux-64/repodata.json", conda.Repodata("linux-64", most))
	r.now.Add(61)
	transcoded := r.p.RecordsTranscoded()
	if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return r.p.Derivations() == 3 })
	if got := r.p.RecordsTranscoded() - transcoded; got != uint64(len(most)) {
		t.Fatalf("most records changed: %d transcoded, want all %d", got, len(most))
	}
	_, ib, err = r.get(t, "linux-64/repodata_shards.msgpack.zst")
	if err != nil {
		t.Fatal(err)
	}
	for n, h := range shardIndex(t, ib) {
		_, sb, err := r.get(t, "linux-64/shards/"+h+".msgpack.zst")
		if err != nil {
			t.Fatalf("shard of %s: %v", n, err)
		}
		var want []conda.Record
		for _, rec := range most {
			if rec.Name() == n {
				want = append(want, rec)
			}
		}
		_, ws, err := conda.Shards("linux-64", want)
		var got, exp any
		if err == nil {
			for _, w := range ws { // (the one shard of want, by its digest)
				err = cmp.Or(msgpack.Unmarshal(unzstd(t, sb), &got), msgpack.Unmarshal(unzstd(t, w), &exp))
			}
		}
		if err != nil || !reflect.DeepEqual(got, exp) {
			t.Fatalf("shard of %s after most changed: %v", n, err)
		}
	}
	if _, cur, err := r.get(t, "linux-64/current_repodata.json"); err != nil || !bytes.Equal(cur, conda.CurrentRepodata("linux-64", most)) {
		t.Fatalf("current_repodata.json after most changed: %v", err)
	}
}

// TestPreviousSetServedDuringDerivation: while the set of a changed
// upstream index is derived, every client keeps getting the previous
// complete set (repodata.json, its .zst, the shard index and every shard it
// names) without waiting; then all of it switches at once.
func TestPreviousSetServedDuringDerivation(t *testing.T) {
	r := newRig(t)
	r.publish("linux-64/repodata.json", manyNames(r, 20, 2, -1))
	files := []string{"linux-64/repodata.json", "linux-64/repodata.json.zst", "linux-64/repodata_shards.msgpack.zst", "linux-64/current_repodata.json"}
	old := map[string][]byte{}
	for _, f := range files {
		_, b, err := r.get(t, f)
		if err != nil {
			t.Fatal(err)
		}
		old[f] = b
	}
	var held atomic.Bool
	gate := make(chan struct{})
	var once sync.Once
	proxy.SetDeriveHook(r.p, func() { held.Store(true); <-gate })
	defer once.Do(func() { close(gate) })

	r.publish("linux-64/repodata.json", manyNames(r, 20, 2, 23)) // a latest version: current_repodata.json changes too
	r.now.Add(61)
	if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, held.Load) // the new set is being derived, and held
	var wg sync.WaitGroup
	errs := make(chan error, 8*len(files))
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, f := range files {
				_, b, err := r.get(t, f)
				if err != nil || !bytes.Equal(b, old[f]) {
					errs <- fmt.Errorf("%s during the derivation: %v, previous bytes: %v", f, err, bytes.Equal(b, old[f]))
					return
				}
			}
			for n, h := range shardIndex(t, old["linux-64/repodata_shards.msgpack.zst"]) {
				if _, _, err := r.get(t, "linux-64/shards/"+h+".msgpack.zst"); err != nil {
					errs <- fmt.Errorf("shard of %s: %v", n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	once.Do(func() { close(gate) })
	waitUntil(t, func() bool {
		_, b, err := r.get(t, "linux-64/repodata.json")
		return err == nil && !bytes.Equal(b, old["linux-64/repodata.json"])
	})
	for _, f := range files { // all switched together
		if _, b, err := r.get(t, f); err != nil || bytes.Equal(b, old[f]) {
			t.Fatalf("%s after the switch: %v, still the previous bytes: %v", f, err, bytes.Equal(b, old[f]))
		}
	}
}

// TestColdZstdIsStreamed: a repodata.json.zst the proxy has not derived
// yet is streamed while it is compressed (the sink begins with no size),
// both when this request fetches the upstream index and when the index is
// stored already; the stream decodes to the upstream's repodata.json; once
// the derived set is published, the stored file is served instead.
func TestColdZstdIsStreamed(t *testing.T) {
	for _, stored := range []bool{false, true} {
		t.Run(fmt.Sprintf("index-stored=%v", stored), func(t *testing.T) {
			r := newRig(t)
			want := manyNames(r, 30, 3, -1)
			r.publish("linux-64/repodata.json", want)
			gate := make(chan struct{})
			proxy.SetDeriveHook(r.p, func() { <-gate }) // no set until the stream is done
			if stored {
				if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil {
					t.Fatal(err)
				}
			}
			rec := &recorder{}
			res, err := r.p.GetStreaming(context.Background(), r.ch, "linux-64/repodata.json.zst", rec)
			close(gate)
			if err != nil || !res.Streamed || rec.size != -1 || rec.began != 1 {
				t.Fatalf("cold .zst: %v, streamed %v, size %d, began %d", err, res.Streamed, rec.size, rec.began)
			}
			d, _ := zstd.NewReader(nil)
			defer d.Close()
			got, err := d.DecodeAll(rec.bytes(), nil)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("the stream does not decode to the upstream index: %v", err)
			}
			waitUntil(t, func() bool { return proxy.HasDerived(r.p, r.ch, "linux-64", "repodata.json.zst") })
			rec = &recorder{}
			res, err = r.p.GetStreaming(context.Background(), r.ch, "linux-64/repodata.json.zst", rec)
			if err != nil || res.Streamed || rec.began != 0 {
				t.Fatalf("after the derivation: %v, streamed %v", err, res.Streamed)
			}
			_, b, err := r.get(t, "linux-64/repodata.json.zst")
			if got, derr := d.DecodeAll(b, nil); err != nil || derr != nil || !bytes.Equal(got, want) {
				t.Fatalf("stored .zst: %v %v", err, derr)
			}
		})
	}
}

// TestScanWhileDownloading: a derivation's scan reads the upstream's
// repodata.json as it downloads (records are scanned, and a package record
// is found, while the upstream still holds back half the file); the
// derivation the download starts takes that scan; with the switch off it
// scans the stored file instead. Either way the set is the same.
func TestScanWhileDownloading(t *testing.T) {
	var sets [2][]byte
	for i, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoScanWhileFetching=%v", off), func(t *testing.T) {
			r := newRigWith(t, func(c *proxy.Config) { c.NoScanWhileFetching = off })
			index := manyNames(r, 200, 30, -1)
			r.publish("linux-64/repodata.json", index)
			gate := make(chan struct{})
			var opened sync.Once
			open := func() { opened.Do(func() { close(gate) }) }
			t.Cleanup(open)
			r.up.gate, r.up.mode = gate, "gated-index"
			var sent, early atomic.Int64 // sent: the upstream may send the rest
			proxy.SetScanHooks(r.p, func(string) {
				if sent.Load() == 0 {
					early.Add(1)
				}
			}, nil)
			got := make(chan error, 1)
			go func() {
				_, b, err := r.get(t, "linux-64/repodata_shards.msgpack.zst")
				sets[i] = b
				got <- err
			}()
			if !off {
				waitUntil(t, func() bool { return early.Load() > 0 })
			}
			sent.Store(1)
			open()
			if err := <-got; err != nil {
				t.Fatal(err)
			}
			if n := early.Load(); (n > 0) == off {
				t.Fatalf("%d records scanned before the upstream sent the whole index", n)
			}
			if n, want := proxy.PrescansTaken(r.p), map[bool]uint64{false: 1, true: 0}[off]; n != want || r.p.Derivations() != 1 {
				t.Fatalf("derivations %d, of them on a scan of the download %d (want %d)", r.p.Derivations(), n, want)
			}
		})
	}
	if !bytes.Equal(sets[0], sets[1]) {
		t.Fatal("the shard index differs with and without scanning during the download")
	}
}

// TestShardIndexDoesNotWaitForTheWholeZst: a derived set is published as
// soon as its shard index is built; the whole-file .zst is compressed
// after it (on the cores the scan no longer needs), a client asking for
// it meanwhile gets it streamed, and the stored one is the same bytes.
func TestShardIndexDoesNotWaitForTheWholeZst(t *testing.T) {
	r := newRig(t)
	want := manyNames(r, 30, 3, -1)
	r.publish("linux-64/repodata.json", want)
	gate, held := make(chan struct{}), make(chan struct{}, 1)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(gate) }) })
	proxy.SetVariantHook(r.p, func(file string) {
		if file == "repodata.json.zst" {
			held <- struct{}{}
			<-gate
		}
	})
	got := make(chan error, 1)
	go func() {
		_, _, err := r.get(t, "linux-64/repodata_shards.msgpack.zst")
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the shard index waits for the whole-file .zst")
	}
	select {
	case <-held: // the .zst is being compressed, and held
	case <-time.After(10 * time.Second):
		t.Fatal("no whole-file .zst compressed after the set was published")
	}
	if proxy.HasDerived(r.p, r.ch, "linux-64", "repodata.json.zst") {
		t.Fatal("the .zst is in the set before its compression ended")
	}
	rec := &recorder{}
	res, err := r.p.GetStreaming(context.Background(), r.ch, "linux-64/repodata.json.zst", rec)
	if err != nil || !res.Streamed {
		t.Fatalf(".zst while it is compressed: %v, streamed %v", err, res.Streamed)
	}
	d, _ := zstd.NewReader(nil)
	defer d.Close()
	if b, err := d.DecodeAll(rec.bytes(), nil); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("the streamed .zst does not decode to the upstream index: %v", err)
	}
	once.Do(func() { close(gate) })
	waitUntil(t, func() bool { return proxy.HasDerived(r.p, r.ch, "linux-64", "repodata.json.zst") })
	stored := &recorder{}
	if res, err := r.p.GetStreaming(context.Background(), r.ch, "linux-64/repodata.json.zst", stored); err != nil || res.Streamed || stored.began != 0 {
		t.Fatalf("after its compression: %v, streamed %v", err, res.Streamed)
	}
	if _, b, err := r.get(t, "linux-64/repodata.json.zst"); err != nil || !bytes.Equal(b, rec.bytes()) {
		t.Fatalf("the stored .zst differs from the streamed one: %v", err)
	}
	// ... and is that stream: the index was compressed once.
	if n := r.p.ZstCompressions(); n != 1 {
		t.Fatalf("the index was compressed %d times for the stream and the stored .zst, want once", n)
	}
}

// TestColdZstdIsShared: concurrent cold .zst clients share one compression
// of the upstream index as it arrives: each gets its bytes before the
// upstream has finished sending, and all get the same stream.
func TestColdZstdIsShared(t *testing.T) {
	r := newRig(t)
	want := manyNames(r, 200, 30, -1)
	r.publish("linux-64/repodata.json", want)
	gate, derive := make(chan struct{}), make(chan struct{})
	var open, derived sync.Once
	openGate := func() { open.Do(func() { close(gate) }) }
	allowDerive := func() { derived.Do(func() { close(derive) }) }
	t.Cleanup(allowDerive) // registered after the rig's: run before it closes the proxy
	t.Cleanup(openGate)
	r.up.gate = gate
	r.up.mode = "gated-index"
	proxy.SetDeriveHook(r.p, func() { <-derive }) // no set until the streams are done
	const clients = 5
	recs := make([]*recorder, clients)
	errs := make(chan error, clients)
	for i := range recs {
		recs[i] = &recorder{}
		go func() {
			_, err := r.p.GetStreaming(context.Background(), r.ch, "linux-64/repodata.json.zst", recs[i])
			errs <- err
		}()
	}
	// Half of the index is upstream's until the gate opens: every client
	// is answering by then.
	waitUntil(t, func() bool {
		for _, rec := range recs {
			if len(rec.bytes()) == 0 {
				return false
			}
		}
		return true
	})
	openGate()
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	allowDerive()
	d, _ := zstd.NewReader(nil)
	defer d.Close()
	for i, rec := range recs {
		got, err := d.DecodeAll(rec.bytes(), nil)
		if err != nil || !bytes.Equal(got, want) || rec.began != 1 {
			t.Fatalf("client %d: does not decode to the upstream index (%v), began %d", i, err, rec.began)
		}
	}
	if n, hits := r.p.ZstStreams(), r.up.hitsOf("/c/linux-64/repodata.json"); n != 1 || hits != 1 {
		t.Fatalf("%d compressions, %d upstream fetches for %d clients; want 1 and 1", n, hits, clients)
	}
	// The stream is the set's .zst once the set is published: the index
	// is not compressed again.
	waitUntil(t, func() bool { return proxy.HasDerived(r.p, r.ch, "linux-64", "repodata.json.zst") })
	if _, b, err := r.get(t, "linux-64/repodata.json.zst"); err != nil || !bytes.Equal(b, recs[0].bytes()) {
		t.Fatalf("the stored .zst differs from the stream: %v", err)
	}
	if n := r.p.ZstCompressions(); n != 1 {
		t.Fatalf("the index was compressed %d times, want once", n)
	}
}

// TestPackageRecordFromRunningDerivation: while a cold index is derived, a
// package's record comes from the derivation's scan as soon as the scan
// has passed it (or as it passes it), an unlisted file is a 404 once the
// scan has passed every record, and none of them waits for the set to be
// built and published.
func TestPackageRecordFromRunningDerivation(t *testing.T) {
	r := newRig(t)
	r.publish("linux-64/repodata.json", manyNames(r, 20, 3, -1))
	early, middle, late := "name000-1.0-0.conda", "name010-1.0-0.conda", "name019-1.2-0.conda"
	for _, fn := range []string{early, late} {
		r.publish("linux-64/"+fn, []byte(fn))
	}
	atMiddle, resume, publish := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var paused, resumed, published sync.Once
	release := func() {
		resumed.Do(func() { close(resume) })
		published.Do(func() { close(publish) })
	}
	t.Cleanup(release) // before the rig closes the proxy
	proxy.SetScanHooks(r.p, func(fn string) {
		if fn == middle {
			paused.Do(func() { close(atMiddle) })
			<-resume
		}
	}, func() { <-publish })

	if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil { // starts the derivation
		t.Fatal(err)
	}
	<-atMiddle
	type got struct {
		b   []byte
		err error
	}
	ask := func(fn string) <-chan got {
		c := make(chan got, 1)
		go func() {
			_, b, err := r.get(t, "linux-64/"+fn)
			c <- got{b, err}
		}()
		return c
	}
	wait := func(what string, c <-chan got) got {
		t.Helper()
		select {
		case g := <-c:
			return g
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no answer in 10 s", what)
			return got{}
		}
	}
	// Passed by the scan, which is paused: read back at once.
	if g := wait("a file the scan passed", ask(early)); g.err != nil || string(g.b) != early {
		t.Fatalf("%s while the scan is paused: %v", early, g.err)
	}
	lateC, unlistedC := ask(late), ask("name999-1.0-0.conda")
	select {
	case g := <-lateC:
		t.Fatalf("%s answered before the scan reached it: %v", late, g.err)
	case g := <-unlistedC:
		t.Fatalf("an unlisted file answered before the scan ended: %v", g.err)
	case <-time.After(50 * time.Millisecond):
	}
	resumed.Do(func() { close(resume) }) // the scan ends; the set stays unpublished
	if g := wait("a file the scan reached later", lateC); g.err != nil || string(g.b) != late {
		t.Fatalf("%s: %v", late, g.err)
	}
	if g := wait("an unlisted file", unlistedC); !errors.Is(g.err, proxy.ErrNotFound) {
		t.Fatalf("unlisted file: %v, want ErrNotFound", g.err)
	}
	if d, l := r.p.Derivations(), r.p.LiveLookups(); d != 0 || l != 2 {
		t.Fatalf("%d derivations published, %d records from the running one; want 0 and 2", d, l)
	}
	published.Do(func() { close(publish) })
	waitUntil(t, func() bool { return r.p.Derivations() == 1 })
}

// TestColdDerivationGivesWayToANewerIndex: with no set published yet, the
// newest upstream index is what is served, so a derivation of an older one
// still running when a newer one arrives stops instead of publishing a set
// older than what clients have seen; the newer set is the one published.
func TestColdDerivationGivesWayToANewerIndex(t *testing.T) {
	r := newRig(t)
	r.publish("linux-64/repodata.json", manyNames(r, 20, 2, -1))
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	var started atomic.Int32
	proxy.SetDeriveHook(r.p, func() { started.Add(1); <-gate })
	if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil { // derivation 1, held
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return started.Load() == 1 })
	newer := manyNames(r, 20, 2, 23)
	r.publish("linux-64/repodata.json", newer)
	r.now.Add(61)
	waitUntil(t, func() bool { // revalidated in the background: the newer index is served
		_, b, err := r.get(t, "linux-64/repodata.json")
		return err == nil && bytes.Equal(b, newer)
	})
	open()
	_, b, err := r.get(t, "linux-64/current_repodata.json") // waits for a set
	if err != nil {
		t.Fatal(err)
	}
	if n, d := started.Load(), r.p.Derivations(); n != 2 || d != 1 {
		t.Fatalf("%d derivations started, %d published; want 2 and 1 (the older one stopped)", n, d)
	}
	if _, cur, err := r.get(t, "linux-64/repodata.json"); err != nil || !bytes.Equal(cur, newer) {
		t.Fatalf("after the derivations: %v, newer index served: %v", err, bytes.Equal(cur, newer))
	}
	if !bytes.Contains(b, []byte("changed >=1")) {
		t.Fatalf("current_repodata.json is not of the newer index")
	}
}

// TestChangeAfterRestart: a restarted proxy has no current_repodata.json
// parts in memory, so its first derivation after a change scans the whole
// index (and gets every file right); the one after that transcodes only
// the changed name.
func TestChangeAfterRestart(t *testing.T) {
	r := newRig(t)
	const names = 20
	r.publish("linux-64/repodata.json", manyNames(r, names, 3, -1))
	if _, _, err := r.get(t, "linux-64/repodata_shards.msgpack.zst"); err != nil {
		t.Fatal(err)
	}
	r.p.Close()
	r.p = proxy.New(proxy.Config{Now: func() time.Time { return time.Unix(r.now.Load(), 0) }, Logger: testlog.New(t, slog.LevelWarn)},
		r.cat, r.st, r.prop, upstream.New(upstream.Config{Retries: 2, Backoff: time.Millisecond}))
	t.Cleanup(r.p.Close)
	for i, change := range []int{5 + 2*names, 9 + 2*names} { // latest records
		doc := manyNames(r, names, 3, change)
		r.publish("linux-64/repodata.json", doc)
		r.now.Add(61)
		transcoded := r.p.RecordsTranscoded()
		if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, func() bool { return r.p.Derivations() == uint64(i+1) })
		want := uint64(names*3 + 1) // the whole index after the restart
		if i == 1 {
			want = 6 // then only the two changed names' records (name009 changed, name005 back as it was)
		}
		if got := r.p.RecordsTranscoded() - transcoded; got != want {
			t.Fatalf("change %d: %d records transcoded, want %d", i, got, want)
		}
		var recs []conda.Record
		if _, err := conda.ScanRepodata(doc, func(rec conda.Record) error { recs = append(recs, rec); return nil }); err != nil {
			t.Fatal(err)
		}
		if _, cur, err := r.get(t, "linux-64/current_repodata.json"); err != nil || !bytes.Equal(cur, conda.CurrentRepodata("linux-64", recs)) {
			t.Fatalf("change %d: current_repodata.json: %v", i, err)
		}
	}
}

// TestSetOfAnotherIncarnationIsNotServed: a channel deleted and created
// again over the same upstream within the same second (perhaps by another
// user, with other upstream credentials or confined fetches) derives its
// own set: the earlier incarnation's is not served to it. Work still
// holding the earlier channel record derives nothing for it and leaves the
// new set alone.
func TestSetOfAnotherIncarnationIsNotServed(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	const path = "linux-64/repodata_shards.msgpack.zst"
	r.prop.at.Store(time.Now().UnixNano()) // every command in the same second
	if _, _, err := r.get(t, path); err != nil {
		t.Fatal(err)
	}
	n := r.p.Derivations()
	if _, err := r.p.Get(ctx, r.ch, path); err != nil || r.p.Derivations() != n {
		t.Fatalf("the same channel again: %v, %d derivations, want %d", err, r.p.Derivations(), n)
	}
	if _, err := r.prop.Propose(ctx, &v1.Command{Op: &v1.Command_DeleteChannel{DeleteChannel: &v1.DeleteChannelOp{Name: "px"}}}); err != nil {
		t.Fatal(err)
	}
	again := createChannel(t, r.prop, r.cat, &v1.Channel{Name: "px", Ttl: 60, MirrorChannelUrl: r.ch.MirrorChannelUrl, MirrorMode: "proxy",
		Metadata: &v1.ChannelMetadata{UpstreamAuthorization: "Bearer other"}})
	if again.CreatedUnix != r.ch.CreatedUnix || again.CreatedIndex == r.ch.CreatedIndex {
		t.Fatalf("created again at %d (index %d), first at %d (index %d): want the same second, another index",
			again.CreatedUnix, again.CreatedIndex, r.ch.CreatedUnix, r.ch.CreatedIndex)
	}
	if _, err := r.p.Get(ctx, again, path); err != nil {
		t.Fatal(err)
	}
	if got := r.p.Derivations(); got != n+1 {
		t.Fatalf("created again: %d derivations, want %d: the earlier incarnation's set was served", got, n+1)
	}
	if hits := r.up.hitsOf("/c/linux-64/repodata.json"); hits != 2 {
		t.Fatalf("the upstream index was fetched %d times, want 2 (once per incarnation)", hits)
	}
	// The earlier record, as work begun before the delete holds it.
	for _, f := range []string{path, "linux-64/repodata.json.zst", "linux-64/current_repodata.json"} {
		if _, err := r.p.Get(ctx, r.ch, f); err == nil {
			t.Errorf("%s for the deleted incarnation: served", f)
		}
	}
	if got := r.p.Derivations(); got != n+1 {
		t.Fatalf("the earlier record derived: %d derivations, want %d", got, n+1)
	}
	if _, err := r.p.Get(ctx, again, path); err != nil || r.p.Derivations() != n+1 {
		t.Fatalf("the new incarnation after the earlier record's requests: %v, %d derivations, want %d", err, r.p.Derivations(), n+1)
	}
}
