package proxy_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/conda/condatest"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/testlog"
	"github.com/condamesh/condamesh/proxy"
	"github.com/condamesh/condamesh/store"
	"github.com/condamesh/condamesh/upstream"
	"github.com/klauspost/compress/zstd"
)

// applier proposes by applying directly to the catalog (no Raft needed to
// test the proxy's logic).
type applier struct {
	mu  sync.Mutex
	cat *catalog.Catalog
	idx uint64
	// onPropose, if set, sees every command (under the applier's lock).
	onPropose func(*v1.Command)
	// at, if set, is the time of every command (Unix nanoseconds).
	at atomic.Int64
}

func (a *applier) Propose(ctx context.Context, cmd *v1.Command) (any, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.onPropose != nil {
		a.onPropose(cmd)
	}
	a.idx++
	cmd.TimeUnixNano = time.Now().UnixNano()
	if at := a.at.Load(); at != 0 {
		cmd.TimeUnixNano = at
	}
	return a.cat.Apply(ctx, a.idx, cmd)
}

// fault is an upstream whose behaviour tests switch at run time.
type fault struct {
	mu      sync.Mutex
	files   map[string][]byte
	mode    string // "", "down" (500), "corrupt"
	hits    map[string]*atomic.Int64
	inm     atomic.Int64 // conditional requests seen
	delay   time.Duration
	lastMod string
	gate    chan struct{} // modes "gated" (packages), "gated-index" (repodata.json): half of each body, then wait for it
}

func (f *fault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	b, ok := f.files[r.URL.Path]
	mode, delay := f.mode, f.delay
	if f.hits[r.URL.Path] == nil {
		f.hits[r.URL.Path] = &atomic.Int64{}
	}
	f.hits[r.URL.Path].Add(1)
	f.mu.Unlock()
	time.Sleep(delay)
	switch {
	case mode == "down":
		http.Error(w, "boom", 500)
		return
	case !ok:
		http.NotFound(w, r)
		return
	}
	etag := fmt.Sprintf(`"%x"`, sha256.Sum256(b))
	if r.Header.Get("If-None-Match") != "" {
		f.inm.Add(1)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	pkg := conda.IsPackageFile(r.URL.Path)
	switch {
	case mode == "corrupt" && pkg:
		b = append(bytes.Clone(b[:len(b)-1]), b[len(b)-1]^0xff)
	case mode == "gzipbomb" && pkg:
		// A few KB on the wire, the file and 1 MB more decoded.
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(gzipped(append(bytes.Clone(b), make([]byte, 1<<20)...)))
		return
	case mode == "gzippad" && pkg:
		// The right bytes decoded, after 2 MB of empty gzip members.
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(append(bytes.Repeat(gzipped(nil), (2<<20)/20), gzipped(b)...))
		return
	}
	if mode == "truncate" && pkg {
		// Promise the whole body, send half, then drop the connection.
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Header().Set("ETag", etag)
		_, _ = w.Write(b[:len(b)/2])
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
			}
		}
		return
	}
	w.Header().Set("ETag", etag)
	if mode == "gated" && pkg || mode == "gated-index" && strings.HasSuffix(r.URL.Path, "/repodata.json") {
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		_, _ = w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		<-f.gate
		_, _ = w.Write(b[len(b)/2:])
		return
	}
	_, _ = w.Write(b)
}

func (f *fault) hitsOf(p string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hits[p] == nil {
		return 0
	}
	return f.hits[p].Load()
}

// total is the number of requests the upstream received.
func (f *fault) total() (n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.hits {
		n += h.Load()
	}
	return n
}

type rig struct {
	p    *proxy.Proxy
	up   *fault
	ch   *v1.Channel
	pkg  []byte
	cat  *catalog.Catalog
	st   *store.Store
	now  atomic.Int64
	srv  *httptest.Server
	prop *applier
}

func newRig(t *testing.T) *rig { return newRigWith(t) }

// createChannel creates ch through prop and returns it as the catalog
// has it (with what the server sets: its creation time and index).
func createChannel(tb testing.TB, prop *applier, cat *catalog.Catalog, ch *v1.Channel) *v1.Channel {
	tb.Helper()
	ctx := context.Background()
	if _, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: ch}}}); err != nil {
		tb.Fatal(err)
	}
	got, err := cat.Channel(ctx, ch.Name)
	if err != nil {
		tb.Fatal(err)
	}
	return got
}

// newRigWith is newRig with the proxy's configuration changed by opts.
func newRigWith(t *testing.T, opts ...func(*proxy.Config)) *rig {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Dir: "/d", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	r := &rig{st: st, cat: catalog.New(st, nil)}
	r.now.Store(time.Now().Unix())
	r.prop = &applier{cat: r.cat}
	spec := condatest.Spec{Name: "pkg", Version: "1.0", Build: "0", Subdir: "linux-64"}
	r.pkg = condatest.TarBz2(t, spec)
	info, _ := conda.ReadPackage(bytes.NewReader(r.pkg), int64(len(r.pkg)), "pkg-1.0-0.tar.bz2")
	d, _ := conda.HashReader(bytes.NewReader(r.pkg))
	rd := conda.Repodata("linux-64", []conda.Record{conda.NewRecord(info, d)})
	r.up = &fault{files: map[string][]byte{"/c/linux-64/repodata.json": rd, "/c/linux-64/pkg-1.0-0.tar.bz2": r.pkg, "/c/noarch/repodata.json": conda.Repodata("noarch", nil)}, hits: map[string]*atomic.Int64{}}
	r.srv = httptest.NewServer(r.up)
	t.Cleanup(r.srv.Close)
	r.ch = createChannel(t, r.prop, r.cat, &v1.Channel{Name: "px", Ttl: 60, MirrorChannelUrl: r.srv.URL + "/c", MirrorMode: "proxy"})
	uc := upstream.New(upstream.Config{Retries: 2, Backoff: time.Millisecond, AttemptTimeout: 2 * time.Second, Logger: testlog.New(t, slog.LevelWarn)})
	cfg := proxy.Config{Now: func() time.Time { return time.Unix(r.now.Load(), 0) }, Logger: testlog.New(t, slog.LevelWarn)}
	for _, o := range opts {
		o(&cfg)
	}
	r.p = proxy.New(cfg, r.cat, st, r.prop, uc)
	t.Cleanup(r.p.Close) // before the store closes
	return r
}

func (r *rig) get(t *testing.T, path string) (proxy.Result, []byte, error) {
	res, err := r.p.Get(context.Background(), r.ch, path)
	if err != nil {
		return res, nil, err
	}
	b, err := r.st.ReadAll(context.Background(), res.CID)
	return res, b, err
}

func TestStaleWhileRevalidateAndStaleIfError(t *testing.T) {
	r := newRig(t)
	_, b, err := r.get(t, "linux-64/repodata.json")
	if err != nil || !bytes.Equal(b, r.up.files["/c/linux-64/repodata.json"]) {
		t.Fatalf("first fetch: %v", err)
	}
	// Within the TTL: no upstream traffic.
	if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil || r.up.hitsOf("/c/linux-64/repodata.json") != 1 {
		t.Fatalf("fresh hit went upstream: %v, hits %d", err, r.up.hitsOf("/c/linux-64/repodata.json"))
	}
	// Past the TTL: served at once (no wait), revalidated conditionally in
	// the background (304).
	r.now.Add(61)
	res, _, err := r.get(t, "linux-64/repodata.json")
	if err != nil || res.Stale {
		t.Fatalf("past TTL: %v stale=%v", err, res.Stale)
	}
	waitUntil(t, func() bool { // conditional, and recorded (done)
		e, err := r.cat.ProxyEntry(context.Background(), "px", "linux-64/repodata.json")
		return r.up.inm.Load() >= 1 && err == nil && e.ValidatedUnix == r.now.Load()
	})
	// Upstream down past the TTL: still served, marked stale.
	r.up.mode = "down"
	r.now.Add(61)
	waitUntil(t, func() bool {
		res, _, err := r.get(t, "linux-64/repodata.json")
		return err == nil && res.Stale
	})
	// Upstream down, nothing cached: an upstream error, never a cached 404.
	if _, _, err := r.get(t, "noarch/repodata.json"); !errors.Is(err, upstream.ErrUnavailable) {
		t.Fatalf("uncached with upstream down: %v", err)
	}
	r.up.mode = ""
	if _, _, err := r.get(t, "noarch/repodata.json"); err != nil {
		t.Fatalf("after the upstream recovered: %v", err)
	}
}

func TestCorruptPackageIsRejected(t *testing.T) {
	r := newRig(t)
	if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil {
		t.Fatal(err)
	}
	r.up.mode = "corrupt"
	if _, _, err := r.get(t, "linux-64/pkg-1.0-0.tar.bz2"); !errors.Is(err, proxy.ErrCorrupt) {
		t.Fatalf("corrupt package: %v", err)
	}
	r.up.mode = "truncate"
	if _, _, err := r.get(t, "linux-64/pkg-1.0-0.tar.bz2"); !errors.Is(err, upstream.ErrUnavailable) {
		t.Fatalf("truncated package: %v", err)
	}
	n := 0
	_ = r.st.List(context.Background(), func(b store.BlobInfo) error {
		if b.Size == int64(len(r.pkg)) {
			n++
		}
		return nil
	})
	if n != 0 {
		t.Fatal("corrupt bytes were stored")
	}
	r.up.mode = ""
	if _, b, err := r.get(t, "linux-64/pkg-1.0-0.tar.bz2"); err != nil || !bytes.Equal(b, r.pkg) {
		t.Fatalf("after the upstream healed: %v", err)
	}
}

func TestDerivedVariantsAndNotFound(t *testing.T) {
	r := newRig(t)
	_, zst, err := r.get(t, "linux-64/repodata.json.zst")
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	if got, err := dec.DecodeAll(zst, nil); err != nil || !bytes.Equal(got, r.up.files["/c/linux-64/repodata.json"]) {
		t.Fatal("derived .zst is not the upstream repodata.json compressed")
	}
	if _, idx, err := r.get(t, "linux-64/repodata_shards.msgpack.zst"); err != nil || len(idx) == 0 {
		t.Fatalf("derived shard index: %v", err)
	}
	if _, _, err := r.get(t, "linux-64/missing-1-0.conda"); !errors.Is(err, proxy.ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder is a proxy.Sink that keeps what it is sent.
type recorder struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	began int
	res   proxy.Result
	size  int64
}

func (r *recorder) Begin(res proxy.Result, size int64) io.Writer {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.began++
	r.res, r.size = res, size
	return r
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

// TestColdPackageStreams: a cold package fetch sends the client its bytes
// while the upstream is still sending, holds the last byte back until the
// file is verified and stored, and cuts a corrupt file short; a package
// whose size and digest are unknown is not streamed.
func TestColdPackageStreams(t *testing.T) {
	ctx := context.Background()
	const pkg = "linux-64/pkg-1.0-0.tar.bz2"

	t.Run("streamed while downloading", func(t *testing.T) {
		r := newRig(t)
		if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil {
			t.Fatal(err)
		}
		r.up.gate, r.up.mode = make(chan struct{}), "gated"
		rec := &recorder{}
		done := make(chan error, 1)
		go func() {
			_, err := r.p.GetStreaming(ctx, r.ch, pkg, rec)
			done <- err
		}()
		waitUntil(t, func() bool { return len(rec.bytes()) >= len(r.pkg)/2 })
		select {
		case err := <-done:
			t.Fatalf("returned (%v) before the upstream sent the second half", err)
		default:
		}
		close(r.up.gate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		want := sha256.Sum256(r.pkg)
		if rec.began != 1 || rec.size != int64(len(r.pkg)) || !bytes.Equal(rec.bytes(), r.pkg) || rec.res.CID.String() != mustCID(t, want[:]) {
			t.Fatalf("streamed %d bytes of %d (began %d, size %d)", len(rec.bytes()), len(r.pkg), rec.began, rec.size)
		}
		again := &recorder{}
		if _, err := r.p.GetStreaming(ctx, r.ch, pkg, again); err != nil || again.began != 0 || r.up.hitsOf("/c/"+pkg) != 1 {
			t.Fatalf("second request: %v, began %d, upstream hits %d (want served from the store)", err, again.began, r.up.hitsOf("/c/"+pkg))
		}
	})

	t.Run("corrupt file cut short", func(t *testing.T) {
		r := newRig(t)
		if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil {
			t.Fatal(err)
		}
		r.up.mode = "corrupt"
		rec := &recorder{}
		if _, err := r.p.GetStreaming(ctx, r.ch, pkg, rec); !errors.Is(err, proxy.ErrCorrupt) {
			t.Fatalf("corrupt package: %v", err)
		}
		if rec.began != 1 || len(rec.bytes()) != len(r.pkg)-1 {
			t.Fatalf("client got %d bytes of a corrupt %d-byte file (began %d), want all but the last", len(rec.bytes()), len(r.pkg), rec.began)
		}
		r.up.mode = ""
		if _, b, err := r.get(t, pkg); err != nil || !bytes.Equal(b, r.pkg) || r.up.hitsOf("/c/"+pkg) != 2 {
			t.Fatalf("after healing: %v, upstream hits %d (the corrupt copy must not be kept)", err, r.up.hitsOf("/c/"+pkg))
		}
	})

	t.Run("a slow client holds no one back", func(t *testing.T) {
		// A client that takes nothing while a 6 MiB package downloads:
		// the download and another client do not wait for it, and it gets
		// every byte once it reads (the part beyond the follower's buffer
		// from the stored file).
		r := newRig(t)
		const bigPath = "linux-64/big-1.0-0.tar.bz2"
		big := make([]byte, 6<<20)
		for i := range big {
			big[i] = byte(i * 7919 >> 8)
		}
		sum, md := sha256.Sum256(big), md5.Sum(big)
		info, _ := conda.ReadPackage(bytes.NewReader(r.pkg), int64(len(r.pkg)), "pkg-1.0-0.tar.bz2")
		d, _ := conda.HashReader(bytes.NewReader(r.pkg))
		recs := []conda.Record{conda.NewRecord(info, d), {Filename: "big-1.0-0.tar.bz2", Subdir: "linux-64", Fields: map[string]any{
			"name": "big", "version": "1.0", "build": "0", "build_number": int64(0), "depends": []any{}, "subdir": "linux-64",
			"sha256": hex.EncodeToString(sum[:]), "md5": hex.EncodeToString(md[:]), "size": int64(len(big))}}}
		r.up.files["/c/linux-64/repodata.json"] = conda.Repodata("linux-64", recs)
		r.up.files["/c/"+bigPath] = big
		if _, _, err := r.get(t, "linux-64/repodata.json"); err != nil {
			t.Fatal(err)
		}
		pr, pw := io.Pipe() // writes block until the client reads
		slow := &pipeSink{w: pw}
		done := make(chan error, 1)
		go func() {
			_, err := r.p.GetStreaming(ctx, r.ch, bigPath, slow)
			pw.Close()
			done <- err
		}()
		waitUntil(t, func() bool { return slow.began.Load() })
		other := make(chan error, 1)
		go func() {
			_, b, err := r.get(t, bigPath)
			if err == nil && !bytes.Equal(b, big) {
				err = errors.New("other client got other bytes")
			}
			other <- err
		}()
		select {
		case err := <-other:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			pr.CloseWithError(errors.New("test failed")) // let the stuck download end
			t.Fatal("another client waited for the slow one")
		}
		select {
		case err := <-done:
			t.Fatalf("the streaming request returned (%v) before its client took its bytes", err)
		default:
		}
		got, err := io.ReadAll(pr)
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("slow client got %d bytes of %d (%v)", len(got), len(big), err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := r.up.hitsOf("/c/" + bigPath); n != 1 {
			t.Fatalf("%d upstream requests", n)
		}
	})

	t.Run("index fetched first", func(t *testing.T) {
		r := newRig(t) // the subdir's repodata was never fetched: it is, before the package
		rec := &recorder{}
		res, err := r.p.GetStreaming(ctx, r.ch, pkg, rec)
		if err != nil || rec.began != 1 || !res.Fetched || !bytes.Equal(rec.bytes(), r.pkg) || r.up.hitsOf("/c/linux-64/repodata.json") != 1 {
			t.Fatalf("%v, began %d, %d bytes", err, rec.began, len(rec.bytes()))
		}
	})
}

// pipeSink streams into a pipe: its client reads when the test says so.
type pipeSink struct {
	w     io.Writer
	began atomic.Bool
}

func (s *pipeSink) Begin(proxy.Result, int64) io.Writer {
	s.began.Store(true)
	return s.w
}

func mustCID(t *testing.T, sum []byte) string {
	t.Helper()
	c, err := store.CIDFromSHA256(sum)
	if err != nil {
		t.Fatal(err)
	}
	return c.String()
}
