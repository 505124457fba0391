package mirror_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/jobs"
	"github.com/condamesh/condamesh/mirror"
	"github.com/condamesh/condamesh/store"
	"github.com/condamesh/condamesh/store/storetest"
	"github.com/condamesh/condamesh/upstream"
)

// applier proposes by applying to the catalog at once (a one-node
// cluster without Raft), and counts the versions of each publication.
type applier struct {
	cat       *catalog.Catalog
	mu        sync.Mutex
	idx       uint64
	published []int // versions per PutVersions command
}

func (a *applier) Propose(ctx context.Context, cmd *v1.Command) (any, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.idx++
	cmd.TimeUnixNano = 1_700_000_000_000_000_000 + int64(a.idx)
	if pv := cmd.GetPutVersions(); pv != nil {
		a.published = append(a.published, len(pv.Versions))
	}
	return a.cat.Apply(ctx, a.idx, cmd)
}

// upstreamChannel serves a channel of n small files over noarch and
// linux-64 from a real listener, counting requests per path and
// connections, and answering 500 to the paths in broken.
type upstreamChannel struct {
	srv      *httptest.Server
	files    map[string][]byte // path under the channel -> bytes
	requests sync.Map          // path -> *atomic.Int64
	conns    atomic.Int64
	broken   map[string]bool
}

func newUpstream(t *testing.T, n int, broken ...string) *upstreamChannel {
	u := &upstreamChannel{files: map[string][]byte{}, broken: map[string]bool{}}
	for _, b := range broken {
		u.broken[b] = true
	}
	recs := map[string][]conda.Record{}
	for i := range n {
		sd := []string{"noarch", "linux-64"}[i%2]
		name := fmt.Sprintf("pkg%d", i%50)
		fn := fmt.Sprintf("%s-1.%d-0.conda", name, i)
		data := make([]byte, 200+i%700)
		_, _ = rand.Read(data)
		u.files[sd+"/"+fn] = data
		sum, md := sha256.Sum256(data), md5.Sum(data)
		recs[sd] = append(recs[sd], conda.Record{Filename: fn, Subdir: sd, Fields: map[string]any{
			"name": name, "version": fmt.Sprintf("1.%d", i), "build": "0", "build_number": int64(0), "depends": []any{},
			"subdir": sd, "sha256": hex.EncodeToString(sum[:]), "md5": hex.EncodeToString(md[:]), "size": int64(len(data)),
		}})
	}
	for sd, rs := range recs {
		u.files[sd+"/repodata.json"] = conda.Repodata(sd, rs)
	}
	u.files["channeldata.json"] = []byte(`{"subdirs":["linux-64","noarch"]}`)
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, "/chan/")
		c, _ := u.requests.LoadOrStore(p, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
		data, ok := u.files[p]
		switch {
		case u.broken[p]:
			http.Error(w, "broken", http.StatusInternalServerError)
		case !ok:
			http.NotFound(w, r)
		default:
			_, _ = w.Write(data)
		}
	}))
	u.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.srv.Start()
	t.Cleanup(u.srv.Close)
	return u
}

// newMirrorChannel opens a store in memory with a catalog holding mirror
// channel "m" of upstream url.
func newMirrorChannel(t *testing.T, url string) (*store.Store, *catalog.Catalog, *applier) {
	ctx := context.Background()
	st := storetest.OpenMem(t)
	cat := catalog.New(st, nil)
	prop := &applier{cat: cat}
	if _, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{
		Name: "m", MirrorChannelUrl: url, MirrorMode: "mirror"}}}}); err != nil {
		t.Fatal(err)
	}
	return st, cat, prop
}

func (u *upstreamChannel) count(p string) int64 {
	if c, ok := u.requests.Load(p); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// TestSyncPipelinesAndPublishes: a sync of 6,000 files fetches each once,
// over a few kept-alive connections (upstream's tests show they are
// pipelined), stores every file with its bytes,
// publishes every version in commands of at most 2,500, holds the
// channel's indexing while it runs, and records a file the upstream
// keeps failing on (after the fallback's retries) without publishing it.
func TestSyncPipelinesAndPublishes(t *testing.T) {
	ctx := context.Background()
	const n = 6000
	bad := "linux-64/pkg7-1.7-0.conda"
	up := newUpstream(t, n, bad)
	st, cat, prop := newMirrorChannel(t, up.srv.URL+"/chan")
	var holds, releases atomic.Int64
	var last jobs.Progress
	var progMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := mirror.New(mirror.Config{
		Logger: logger,
		Hold: func(ch string) func() {
			if ch != "m" {
				t.Errorf("held %q", ch)
			}
			holds.Add(1)
			return func() { releases.Add(1) }
		},
		OnProgress: func(_ string, p jobs.Progress) { progMu.Lock(); last = p; progMu.Unlock() },
	}, cat, st, prop, upstream.New(upstream.Config{Logger: logger, Retries: 1, Backoff: 1}))
	if err := s.Sync(ctx, "m", "owner", mirror.FromRepodata); err != nil {
		t.Fatal(err)
	}
	if holds.Load() != 1 || releases.Load() != 1 {
		t.Fatalf("held %d times, released %d times", holds.Load(), releases.Load())
	}
	total := 0
	for _, k := range prop.published {
		if k > 2500 {
			t.Fatalf("a command published %d versions", k)
		}
		total += k
	}
	if total != n-1 {
		t.Fatalf("published %d versions in %v, want %d", total, prop.published, n-1)
	}
	for p, data := range up.files {
		if strings.HasSuffix(p, ".json") {
			continue
		}
		if p == bad {
			if up.count(p) < 2 {
				t.Errorf("the failing file was tried %d times: no fallback retry", up.count(p))
			}
			continue
		}
		if c := up.count(p); c != 1 {
			t.Fatalf("%s fetched %d times", p, c)
		}
		sum := sha256.Sum256(data)
		id, _ := store.CIDFromSHA256(sum[:])
		got, err := st.ReadAll(ctx, id)
		if err != nil || string(got) != string(data) {
			t.Fatalf("%s: stored bytes differ (%v)", p, err)
		}
	}
	for _, sd := range []string{"noarch", "linux-64"} {
		vs, err := cat.SubdirVersions(ctx, "m", sd)
		if err != nil || len(vs) < n/2-1 {
			t.Fatalf("%s: %d versions (%v)", sd, len(vs), err)
		}
		for _, v := range vs {
			if sd+"/"+v.Filename == bad {
				t.Fatal("the failing file was published")
			}
		}
	}
	progMu.Lock()
	defer progMu.Unlock()
	if last.FilesDone != n || last.Errors != 1 || !strings.Contains(last.LastError, "pkg7-1.7-0.conda") {
		t.Fatalf("progress: done %d/%d, %d errors, last %q", last.FilesDone, last.FilesTotal, last.Errors, last.LastError)
	}
	if c := up.conns.Load(); c > 16 {
		t.Fatalf("%d connections for %d files", c, n)
	}
}

// TestSyncBoundsRepodata: an upstream repodata.json larger than
// MaxIndexSize decoded (a gzip bomb) or on the wire (gzip padded with empty
// members) is refused: the subdir is recorded as an error and nothing of
// it is published.
func TestSyncBoundsRepodata(t *testing.T) {
	ctx := context.Background()
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b)
		_ = zw.Close()
		return buf.Bytes()
	}
	data := []byte("package bytes")
	sum, md := sha256.Sum256(data), md5.Sum(data)
	rec := func(sd string) []byte {
		return conda.Repodata(sd, []conda.Record{{Filename: "p-1-0.conda", Subdir: sd, Fields: map[string]any{
			"name": "p", "version": "1", "build": "0", "build_number": int64(0), "depends": []any{}, "subdir": sd,
			"sha256": hex.EncodeToString(sum[:]), "md5": hex.EncodeToString(md[:]), "size": int64(len(data))}}})
	}
	bodies := map[string][]byte{
		"/chan/channeldata.json":       []byte(`{"subdirs":["linux-64","noarch"]}`),
		"/chan/linux-64/repodata.json": append(bytes.Repeat(gz(nil), (1<<20)/20), gz(rec("linux-64"))...),
		"/chan/noarch/repodata.json":   gz(append(rec("noarch"), bytes.Repeat([]byte(" "), 1<<20)...)),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := bodies[r.URL.Path]
		switch {
		case strings.HasSuffix(r.URL.Path, ".conda"):
			_, _ = w.Write(data)
		case !ok:
			http.NotFound(w, r)
		case strings.HasSuffix(r.URL.Path, "/repodata.json"):
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(b)
		default:
			_, _ = w.Write(b)
		}
	}))
	defer srv.Close()
	st, cat, prop := newMirrorChannel(t, srv.URL+"/chan")
	var last jobs.Progress
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := mirror.New(mirror.Config{Logger: logger, MaxIndexSize: 64 << 10, OnProgress: func(_ string, p jobs.Progress) { last = p }},
		cat, st, prop, upstream.New(upstream.Config{Logger: logger, Retries: 1, Backoff: 1}))
	if err := s.Sync(ctx, "m", "owner", mirror.FromRepodata); err != nil {
		t.Fatal(err)
	}
	if len(prop.published) != 0 || last.Errors != 2 || !strings.Contains(last.LastError, "too large") {
		t.Fatalf("published %v, %d errors (last %q): want both subdirs refused as too large", prop.published, last.Errors, last.LastError)
	}
}
