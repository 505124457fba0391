// Package proxy implements proxy channels: a read-through cache of an
// upstream conda channel. Index files are revalidated with conditional
// requests once the channel's TTL has passed, in the background, while the
// cached copy is served (stale-while-revalidate); when the upstream is down
// the cached copy keeps being served, marked stale. Packages are immutable
// once cached and verified against the upstream repodata's sha256 and size.
// Concurrent misses for one file make one upstream request. When the
// upstream publishes no repodata.json.zst, .bz2, current_repodata.json or
// CEP-16 shards, the proxy derives them from its repodata.json, so clients
// always get the fast path.
//
// Cache pointers (path -> CID, upstream validators, validation time) are
// replicated catalog records (ProxyEntry); the bytes are local blobs.
package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"github.com/condamesh/condamesh/upstream"
	"github.com/ipfs/go-cid"
	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/proto"
)

// Errors of Get (besides upstream's, which are wrapped).
var (
	// ErrNotFound: the upstream does not have the file.
	ErrNotFound = errors.New("proxy: not found")
	// ErrCorrupt: the upstream sent bytes that do not match its own
	// repodata (sha256 or size); nothing was stored.
	ErrCorrupt = errors.New("proxy: upstream sent corrupt data")
)

// negativeTTL bounds how long a 404 from the upstream is remembered.
const negativeTTL = time.Minute

// Proposer replicates catalog commands.
type Proposer interface {
	Propose(ctx context.Context, cmd *v1.Command) (any, error)
}

// Blobs is the blob store as the proxy uses it.
type Blobs interface {
	Put(ctx context.Context, r io.Reader, opt store.PutOptions) (store.BlobInfo, error)
	Has(ctx context.Context, c cid.Cid) bool
	ReadAll(ctx context.Context, c cid.Cid) ([]byte, error)
	Open(ctx context.Context, c cid.Cid) (*store.Blob, error)
}

// Config configures a Proxy.
type Config struct {
	// MaxIndexSize bounds an upstream index file. Default 1 GiB.
	MaxIndexSize int64
	// RefreshTimeout bounds a background revalidation. Default 2 min.
	RefreshTimeout time.Duration
	// Now returns the current time; tests replace it.
	Now    func() time.Time
	Logger *slog.Logger
}

// Proxy serves proxy channels.
type Proxy struct {
	cfg   Config
	cat   *catalog.Catalog
	blobs Blobs
	prop  Proposer
	up    *upstream.Client
	log   *slog.Logger
	sf    singleflight.Group

	mu         sync.Mutex
	failures   map[string]failure // key -> last failed revalidation
	refreshing map[string]bool    // keys with a revalidation in flight
	parsed     map[cid.Cid]map[string]want

	// hits keeps, per file, what a cache hit derives from its entry (the
	// decoded CID, that the blob is stored, the modification time), for as
	// long as the catalog hands out the same shared entry record.
	hitsMu sync.RWMutex
	hits   map[string]hit
}

type hit struct {
	entry *v1.ProxyEntry
	cid   cid.Cid
	mod   time.Time
}

const hitsMax = 1 << 16

// failure is a failed revalidation; the next attempt waits retryAfter.
type failure struct {
	err error
	at  time.Time
}

// retryAfter spaces revalidation attempts while the upstream fails.
const retryAfter = 10 * time.Second

// want is what the upstream repodata says a package file is.
type want struct {
	sha256 []byte
	size   int64
}

// New returns a proxy.
func New(cfg Config, cat *catalog.Catalog, blobs Blobs, prop Proposer, up *upstream.Client) *Proxy {
	if cfg.MaxIndexSize == 0 {
		cfg.MaxIndexSize = 1 << 30
	}
	if cfg.RefreshTimeout == 0 {
		cfg.RefreshTimeout = 2 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Proxy{cfg: cfg, cat: cat, blobs: blobs, prop: prop, up: up, log: cfg.Logger.With("component", "proxy"),
		failures: map[string]failure{}, refreshing: map[string]bool{}, parsed: map[cid.Cid]map[string]want{}}
}

// Result is a file to serve.
type Result struct {
	CID     cid.Cid
	ModTime time.Time
	// Age is how long ago the upstream last confirmed the file.
	Age time.Duration
	// Stale is set when the copy is past its TTL and the upstream could
	// not be reached to revalidate it (serve with a Warning).
	Stale bool
	// Immutable files (packages, shards) may be cached forever by clients.
	Immutable bool
	// Fetched is set when this request had to wait for the upstream (a miss).
	Fetched bool
}

func key(ch, path string) string { return catalog.ChannelKey(ch) + "/" + path }

// isImmutable reports content-addressed or versioned files.
func isImmutable(path string) bool {
	return conda.IsPackageFile(path) || strings.Contains(path, "/shards/")
}

// Get returns the file at path of proxy channel ch, fetching it from the
// upstream on a miss (blocking) or revalidating it in the background when
// its TTL has passed.
func (p *Proxy) Get(ctx context.Context, ch *v1.Channel, path string) (Result, error) {
	return p.get(ctx, ch, path, nil)
}

// Sink receives a package file while a cold fetch stores it, so that the
// client whose request caused the fetch gets its first bytes at once
// instead of after the whole download (clients time out waiting for large
// packages otherwise). Begin is called at most once, after the upstream
// answered, and only when the file's size and sha256 are known from the
// upstream's repodata; it returns the writer for the body. All but the last
// byte are written while the file downloads, the last byte only once the
// file is verified and stored, so a client never receives a whole file that
// turns out to be corrupt: it sees the response cut short. The writer is
// written from a goroutine of its own (see follower), never after
// GetStreaming returned.
type Sink interface {
	Begin(res Result, size int64) io.Writer
}

// GetStreaming is Get with a cold fetch of a package file streamed to sink.
// If sink's Begin was called, an error means the response was cut short.
func (p *Proxy) GetStreaming(ctx context.Context, ch *v1.Channel, path string, sink Sink) (Result, error) {
	return p.get(ctx, ch, path, sink)
}

func (p *Proxy) get(ctx context.Context, ch *v1.Channel, path string, sink Sink) (Result, error) {
	e, err := p.cat.ProxyEntry(ctx, ch.Name, path)
	if err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return Result{}, err
	}
	now := p.cfg.Now()
	if e != nil && p.sourceChanged(ctx, ch, e) {
		e = nil // derived from an older repodata.json: derive again
	}
	if e != nil {
		age := now.Sub(time.Unix(e.ValidatedUnix, 0))
		if e.Status == 404 {
			if age < min(negativeTTL, ttl(ch)) {
				return Result{}, fmt.Errorf("%w: %s/%s", ErrNotFound, ch.Name, path)
			}
		} else if h, ok := p.stored(ctx, ch.Name, path, e); ok {
			res := Result{CID: h.cid, ModTime: h.mod, Age: age, Immutable: isImmutable(path)}
			if res.Immutable || age < ttl(ch) {
				return res, nil
			}
			// Past the TTL: answer now, revalidate in the background.
			p.refreshAsync(ch, path)
			p.mu.Lock()
			_, res.Stale = p.failures[key(ch.Name, path)]
			p.mu.Unlock()
			return res, nil
		}
	}
	// The function runs in the first caller's goroutine: only that
	// caller's sink can stream; the others wait for the stored file, which
	// the download never holds back for the streaming client.
	var st *stream
	if sink != nil {
		st = &stream{sink: sink}
	}
	v, err, _ := p.sf.Do(key(ch.Name, path), func() (any, error) {
		return p.fetch(context.WithoutCancel(ctx), ch, path, nil, st)
	})
	if st != nil && st.f != nil {
		st.f.wait() // the sink's writer is the caller's until it returns
	}
	if err != nil {
		return Result{}, err
	}
	res := v.(Result)
	res.Fetched = true
	return res, nil
}

// stored returns the decoded entry if its blob is in the store.
func (p *Proxy) stored(ctx context.Context, channel, path string, e *v1.ProxyEntry) (hit, bool) {
	k := key(channel, path)
	p.hitsMu.RLock()
	h, ok := p.hits[k]
	p.hitsMu.RUnlock()
	if ok && h.entry == e {
		return h, true
	}
	c, err := cid.Decode(e.Cid)
	if err != nil || !p.blobs.Has(ctx, c) {
		return hit{}, false
	}
	h = hit{entry: e, cid: c, mod: modTime(e)}
	p.hitsMu.Lock()
	if p.hits == nil || len(p.hits) >= hitsMax {
		p.hits = map[string]hit{}
	}
	p.hits[k] = h
	p.hitsMu.Unlock()
	return h, true
}

// sourceChanged reports a derived entry whose source repodata.json has
// been replaced since it was derived.
func (p *Proxy) sourceChanged(ctx context.Context, ch *v1.Channel, e *v1.ProxyEntry) bool {
	srcCID, ok := strings.CutPrefix(e.Etag, derivedPrefix)
	if !ok {
		return false
	}
	src, _ := derivable(e.Path)
	se, err := p.cat.ProxyEntry(ctx, ch.Name, src)
	return err != nil || se.Cid != srcCID
}

func ttl(ch *v1.Channel) time.Duration {
	if ch.Ttl <= 0 {
		return 0
	}
	return time.Duration(ch.Ttl) * time.Second
}

func modTime(e *v1.ProxyEntry) time.Time {
	return lastModified(e.LastModified, time.Unix(e.ValidatedUnix, 0))
}

// lastModified parses an upstream Last-Modified value, or returns fallback.
func lastModified(v string, fallback time.Time) time.Time {
	if t, err := time.Parse(time.RFC1123, v); err == nil {
		return t
	}
	return fallback
}

// refreshAsync revalidates one file in the background: at most one
// revalidation per file at a time, and while the upstream fails, at most
// one attempt per retryAfter.
func (p *Proxy) refreshAsync(ch *v1.Channel, path string) {
	k := key(ch.Name, path)
	p.mu.Lock()
	f, failed := p.failures[k]
	if p.refreshing[k] || (failed && p.cfg.Now().Sub(f.at) < retryAfter) {
		p.mu.Unlock()
		return
	}
	p.refreshing[k] = true
	p.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.RefreshTimeout)
		defer cancel()
		_, err, _ := p.sf.Do(k, func() (any, error) {
			e, _ := p.cat.ProxyEntry(ctx, ch.Name, path)
			if e != nil && p.cfg.Now().Sub(time.Unix(e.ValidatedUnix, 0)) < ttl(ch) {
				return nil, nil // someone refreshed it meanwhile
			}
			return p.fetch(ctx, ch, path, e, nil)
		})
		p.mu.Lock()
		delete(p.refreshing, k)
		if err != nil && !errors.Is(err, ErrNotFound) {
			p.failures[k] = failure{err: err, at: p.cfg.Now()}
		} else {
			delete(p.failures, k)
		}
		p.mu.Unlock()
		if err != nil {
			p.log.Warn("revalidate proxied file", "channel", ch.Name, "path", path, "err", err)
		}
	}()
}

// fetch gets path from the upstream (conditionally when cached is set),
// stores it and records the entry. Missing derivable index variants are
// built from the subdir's repodata.json.
// stream is a cold fetch's way to the client that caused it.
type stream struct {
	sink Sink
	f    *follower // set once the sink began
}

func (p *Proxy) fetch(ctx context.Context, ch *v1.Channel, path string, cached *v1.ProxyEntry, st *stream) (Result, error) {
	req := upstream.Request{URL: upstream.Join(ch.MirrorChannelUrl, path), Authorization: ch.GetMetadata().GetUpstreamAuthorization()}
	if cached != nil && cached.Status == 200 && !strings.HasPrefix(cached.Etag, derivedPrefix) {
		req.IfNoneMatch, req.IfModifiedSince = cached.Etag, cached.LastModified
	}
	resp, err := p.up.Get(ctx, req)
	if errors.Is(err, upstream.ErrNotFound) {
		if src, ok := derivable(path); ok {
			return p.derive(ctx, ch, path, src)
		}
		neg := &v1.ProxyEntry{Channel: ch.Name, Path: path, Status: 404, ValidatedUnix: p.cfg.Now().Unix()}
		if perr := p.record(ctx, neg); perr != nil {
			return Result{}, perr
		}
		return Result{}, fmt.Errorf("%w: %s/%s", ErrNotFound, ch.Name, path)
	}
	if err != nil {
		return Result{}, err
	}
	if resp.NotModified {
		next := cloneEntry(cached)
		next.ValidatedUnix = p.cfg.Now().Unix()
		if resp.ETag != "" {
			next.Etag = resp.ETag
		}
		if err := p.record(ctx, next); err != nil {
			return Result{}, err
		}
		c, _ := cid.Decode(next.Cid)
		return Result{CID: c, ModTime: modTime(next), Immutable: isImmutable(path)}, nil
	}
	defer resp.Body.Close()
	opt := store.PutOptions{MaxSize: p.cfg.MaxIndexSize}
	if conda.IsPackageFile(path) {
		opt.MaxSize = 0
		if w, ok := p.expected(ctx, ch, path); ok {
			opt.WantSHA256 = w.sha256
			opt.WantSize, opt.WantSizeSet = w.size, w.size > 0
		}
	}
	body := &readTracker{r: resp.Body}
	var fol *follower
	if st != nil && opt.WantSizeSet && len(opt.WantSHA256) == sha256.Size {
		c, err := store.CIDFromSHA256(opt.WantSHA256)
		if err == nil {
			mod := lastModified(resp.LastModified, p.cfg.Now())
			if w := st.sink.Begin(Result{CID: c, ModTime: mod, Immutable: true, Fetched: true}, opt.WantSize); w != nil {
				fol = newFollower(w, opt.WantSize)
				st.f = fol
				defer fol.abort() // unless finished first
				body.r = io.TeeReader(resp.Body, fol)
			}
		}
	}
	info, err := p.blobs.Put(ctx, body, opt)
	if errors.Is(err, store.ErrDigestMismatch) || errors.Is(err, store.ErrSizeMismatch) {
		return Result{}, fmt.Errorf("%w: %s: %v", ErrCorrupt, upstream.Redact(req.URL), err)
	}
	if body.err != nil && !errors.Is(body.err, io.EOF) {
		// The upstream broke off (truncated, reset): nothing was stored.
		return Result{}, fmt.Errorf("%w: %s: %v", upstream.ErrUnavailable, upstream.Redact(req.URL), body.err)
	}
	if err != nil {
		return Result{}, fmt.Errorf("store %s/%s: %w", ch.Name, path, err)
	}
	e := &v1.ProxyEntry{Channel: ch.Name, Path: path, Cid: info.CID.String(), Etag: resp.ETag, LastModified: resp.LastModified, ValidatedUnix: p.cfg.Now().Unix(), Size: info.Size, Status: 200}
	if err := p.record(ctx, e); err != nil {
		return Result{}, err
	}
	if fol != nil {
		fol.finish(func(off int64) (io.ReadCloser, error) { // verified and stored: the rest may go
			b, err := p.blobs.Open(ctx, info.CID)
			if err != nil {
				return nil, err
			}
			if _, err := b.Content().Seek(off, io.SeekStart); err != nil {
				b.Close()
				return nil, err
			}
			return struct {
				io.Reader
				io.Closer
			}{b.Content(), b}, nil
		})
	}
	return Result{CID: info.CID, ModTime: modTime(e), Immutable: isImmutable(path)}, nil
}

func (p *Proxy) record(ctx context.Context, es ...*v1.ProxyEntry) error {
	_, err := p.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutProxyEntries{PutProxyEntries: &v1.PutProxyEntriesOp{Entries: es}}})
	return err
}

func cloneEntry(e *v1.ProxyEntry) *v1.ProxyEntry { return proto.Clone(e).(*v1.ProxyEntry) }

// expected looks the package up in the cached repodata of its subdir.
func (p *Proxy) expected(ctx context.Context, ch *v1.Channel, path string) (want, bool) {
	subdir, fn, ok := strings.Cut(path, "/")
	if !ok {
		return want{}, false
	}
	e, err := p.cat.ProxyEntry(ctx, ch.Name, subdir+"/repodata.json")
	if err != nil || e.Cid == "" {
		return want{}, false
	}
	c, err := cid.Decode(e.Cid)
	if err != nil {
		return want{}, false
	}
	p.mu.Lock()
	m, ok := p.parsed[c]
	p.mu.Unlock()
	if !ok {
		raw, err := p.blobs.ReadAll(ctx, c)
		if err != nil {
			return want{}, false
		}
		doc, err := conda.ParseRepodata(raw)
		if err != nil {
			return want{}, false
		}
		m = map[string]want{}
		for _, r := range doc.Records() {
			h, _ := r.Fields["sha256"].(string)
			sum, err := hex.DecodeString(h)
			if err != nil || len(sum) != 32 {
				continue
			}
			size, _ := fieldInt(r.Fields["size"])
			m[r.Filename] = want{sha256: sum, size: size}
		}
		p.mu.Lock()
		if len(p.parsed) > 16 {
			clear(p.parsed)
		}
		p.parsed[c] = m
		p.mu.Unlock()
	}
	w, ok := m[fn]
	return w, ok
}

func fieldInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case float64:
		return int64(n), true
	case interface{ Int64() (int64, error) }:
		i, err := n.Int64()
		return i, err == nil
	}
	return 0, false
}

// readTracker remembers the error of the upstream body, to tell an
// upstream failure from a local one.
type readTracker struct {
	r   io.Reader
	err error
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil {
		t.err = err
	}
	return n, err
}
