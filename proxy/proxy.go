// Package proxy implements proxy channels: a read-through cache of an
// upstream conda channel. Index files are revalidated with conditional
// requests once the channel's TTL has passed, in the background, while the
// cached copy is served (stale-while-revalidate); when the upstream is down
// the cached copy keeps being served, marked stale. A package file is
// served by the record the subdir's derived set has for it (the shard of
// its name): an unlisted file is not found, and the bytes served are always
// the blob named by the record's sha256, fetched and checked against its
// sha256 and size before they are stored (a record that changes under the
// same file name means other bytes). Concurrent misses for one file make
// one upstream request.
//
// When the upstream publishes no repodata.json.zst, current_repodata.json
// or CEP-16 shards, the proxy derives them from its repodata.json: a
// derived set per subdir (derived.go), built by streaming the document
// once, incrementally (only the shards of changed names are rebuilt),
// node-locally (every node derives the same bytes; nothing is replicated),
// and published atomically: the previous set, and the repodata.json it
// came from, are served until the next one is complete. A cold .zst is
// streamed while it is compressed, one compression per subdir shared by
// the clients asking meanwhile; while a set is derived, package records
// come from the derivation's scan as it passes them (live.go). The scan
// transcodes each record straight to its shard entry
// (conda.ScanShardPairs), on every core, and runs while the upstream's
// repodata.json downloads (prescan.go); the whole-file .zst is compressed
// after the set is published (streamed to clients meanwhile). After a small
// upstream change the scan only cuts records out and digests them by
// name, and only the changed names' records are transcoded (diffscan.go);
// current_repodata.json copies the unchanged names' parts from the
// previous one (conda.CurrentCache).
//
// Only paths that can be a conda channel's files are fetched (checkPath).
// Cache pointers of fetched files (path -> CID, upstream validators,
// validation time) are replicated catalog records (ProxyEntry); the bytes
// are local blobs; the upstream's 404s are remembered on the node only, for
// a while (NegativeTTL, NegativeEntries).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
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
	// repodata (sha256 or size), or a repodata.json that does not parse;
	// nothing was stored.
	ErrCorrupt = errors.New("proxy: upstream sent corrupt data")
	// ErrTooLarge: an upstream index file is larger than MaxIndexSize.
	ErrTooLarge = errors.New("proxy: upstream index file too large")
)

// Proposer replicates catalog commands.
type Proposer interface {
	Propose(ctx context.Context, cmd *v1.Command) (any, error)
}

// Blobs is the store as the proxy uses it: blobs, scratch files, and the
// node-local keys of derived sets.
type Blobs interface {
	Put(ctx context.Context, r io.Reader, opt store.PutOptions) (store.BlobInfo, error)
	Has(ctx context.Context, c cid.Cid) bool
	Adopt(ctx context.Context, c cid.Cid) (store.BlobInfo, error)
	Stat(ctx context.Context, c cid.Cid) (store.BlobInfo, error)
	ReadAll(ctx context.Context, c cid.Cid) ([]byte, error)
	Open(ctx context.Context, c cid.Cid) (*store.Blob, error)
	Sync(ctx context.Context) error
	NewScratch() (*store.Scratch, error)
	Get(ctx context.Context, key []byte) ([]byte, error)
	Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error
	WriteLocal(ctx context.Context, writes []store.LocalWrite) error
}

// DefaultMaxIndexSize is the default bound of an upstream index file.
const DefaultMaxIndexSize = 1 << 30

// Config configures a Proxy. Zero values take the defaults.
type Config struct {
	// MaxIndexSize bounds an upstream index file (repodata.json and the
	// like), decoded and on the wire. Default DefaultMaxIndexSize (1 GiB).
	MaxIndexSize int64
	// NegativeTTL is how long an upstream 404 is remembered (on this node
	// only), at most the channel's TTL when it has one. Default 1 min.
	NegativeTTL time.Duration
	// NegativeEntries bounds the 404s remembered. Default 10,000.
	NegativeEntries int
	// Derivations bounds the derivations of index files (derived sets,
	// and the gzip and bzip2 forms of a repodata.json) running at once:
	// each holds a few megabytes plus, per package name of its subdir, the
	// records of the latest version. Default 1.
	Derivations int
	// DeriveTimeout bounds one derivation. Default 10 min.
	DeriveTimeout time.Duration
	// RefreshTimeout bounds a background revalidation. Default 2 min.
	RefreshTimeout time.Duration
	// NoScanWhileFetching makes a derivation scan the upstream's
	// repodata.json once it is stored, not while it downloads (prescan.go).
	NoScanWhileFetching bool
	// ScanWorkers is how many goroutines a derivation transcodes the
	// upstream's records on (conda.ScanOptions.Workers): 0 for one per
	// CPU, 1 to transcode on the scanning goroutine alone.
	ScanWorkers int
	// Now returns the current time; tests replace it.
	Now    func() time.Time
	Logger *slog.Logger
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	if c.MaxIndexSize < 0 || c.NegativeTTL < 0 || c.NegativeEntries < 0 || c.Derivations < 0 || c.DeriveTimeout < 0 || c.RefreshTimeout < 0 || c.ScanWorkers < 0 {
		return errors.New("proxy: config: negative bound")
	}
	return nil
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
	neg   *negCache
	work  chan struct{} // a slot per derivation running (Config.Derivations)

	// Derived sets (derived.go): the published ones by key(channel,
	// subdir), and decoded shards for package look-ups.
	setsMu         sync.Mutex
	setCache       map[string]*derivedSet
	currents       map[string]*conda.CurrentCache // current_repodata.json's encoded names, by key(channel, subdir)
	entryCache     map[[32]byte]map[string]conda.ShardEntry
	upIndexes      map[string]upIndex // upstream shard indexes decoded, by key(channel, subdir) (upshards.go)
	upShardHits    atomic.Uint64
	deriving       map[string]*derivation // under mu
	prescans       map[string]*prescan    // under mu: scans of stored downloads not yet taken by their derivation
	prescanSlots   chan struct{}          // scans of downloads at once
	derivations    atomic.Uint64
	shardsBuilt    atomic.Uint64
	currentEncoded atomic.Uint64
	transcoded     atomic.Uint64
	deriveHook     func()       // tests: runs as a derivation starts
	scanHook       func(string) // tests: runs as the scan passes each file
	scannedHook    func()       // tests: runs once the scan has passed every file
	variantHook    func(string) // tests: runs as a lazy variant's compression starts
	liveLookups    atomic.Uint64
	prescansTaken  atomic.Uint64

	// Cold .zst compressions running, by key(channel, subdir).
	castMu          sync.Mutex
	casts           map[string]*zstCast
	kept            map[string]*zstCast // finished casts of stored indexes, for their sets' .zst (keepCastLocked)
	zstStreams      atomic.Uint64
	zstCompressions atomic.Uint64

	// bg is the context of background work (derivations, revalidations);
	// Close cancels it and waits for bgWG.
	bg     context.Context
	stopBG context.CancelFunc
	bgWG   sync.WaitGroup

	mu         sync.Mutex
	failures   map[string]failure // key -> last failed revalidation
	refreshing map[string]bool    // keys with a revalidation in flight

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

// New returns a proxy.
func New(cfg Config, cat *catalog.Catalog, blobs Blobs, prop Proposer, up *upstream.Client) *Proxy {
	if cfg.MaxIndexSize == 0 {
		cfg.MaxIndexSize = DefaultMaxIndexSize
	}
	if cfg.NegativeTTL == 0 {
		cfg.NegativeTTL = time.Minute
	}
	if cfg.NegativeEntries == 0 {
		cfg.NegativeEntries = 10000
	}
	if cfg.Derivations == 0 {
		cfg.Derivations = 1
	}
	if cfg.DeriveTimeout == 0 {
		cfg.DeriveTimeout = 10 * time.Minute
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
	bg, stop := context.WithCancel(context.Background())
	return &Proxy{cfg: cfg, cat: cat, blobs: blobs, prop: prop, up: up, log: cfg.Logger.With("component", "proxy"), bg: bg, stopBG: stop,
		neg: newNegCache(cfg.NegativeEntries), work: make(chan struct{}, cfg.Derivations), prescanSlots: make(chan struct{}, cfg.Derivations), prescans: map[string]*prescan{},
		setCache: map[string]*derivedSet{}, currents: map[string]*conda.CurrentCache{}, entryCache: map[[32]byte]map[string]conda.ShardEntry{}, upIndexes: map[string]upIndex{}, deriving: map[string]*derivation{},
		failures: map[string]failure{}, refreshing: map[string]bool{}}
}

// Close stops the background work (derivations, revalidations) and waits
// for it: call it before closing the store. A derivation cut short is
// started again on the next request.
func (p *Proxy) Close() {
	p.stopBG()
	p.bgWG.Wait()
	p.mu.Lock()
	for k, ps := range p.prescans {
		_ = ps.sc.Close()
		delete(p.prescans, k)
	}
	p.mu.Unlock()
	p.castMu.Lock()
	for k, c := range p.kept {
		c.release()
		delete(p.kept, k)
	}
	p.castMu.Unlock()
}

// goBackground runs f on a goroutine of the proxy's background work,
// unless the proxy is closed.
func (p *Proxy) goBackground(f func(ctx context.Context)) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bg.Err() != nil {
		return false
	}
	p.bgWG.Add(1)
	go func() {
		defer p.bgWG.Done()
		f(p.bg)
	}()
	return true
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
	// Streamed is set when the file went to the Sink as it was made (a
	// cold repodata.json.zst, see GetStreaming): CID is undefined.
	Streamed bool
}

func key(ch, path string) string { return catalog.ChannelKey(ch) + "/" + path }

// isImmutable reports content-addressed or versioned files.
func isImmutable(p string) bool {
	return conda.IsPackageFile(p) || isShardName(path.Base(p))
}

// Get returns the file at path of proxy channel ch, fetching it from the
// upstream on a miss (blocking) or revalidating it in the background when
// its TTL has passed.
func (p *Proxy) Get(ctx context.Context, ch *v1.Channel, path string) (Result, error) {
	return p.get(ctx, ch, path, nil, false)
}

// GetReady is Get for a file the caller can do without: a derived gzip or
// bzip2 form of a repodata.json that is not derived yet is not waited for
// (ErrNotFound; its derivation starts in the background).
func (p *Proxy) GetReady(ctx context.Context, ch *v1.Channel, path string) (Result, error) {
	return p.get(ctx, ch, path, nil, true)
}

// Sink receives a package file while a cold fetch stores it, so that the
// client whose request caused the fetch gets its first bytes at once
// instead of after the whole download (clients time out waiting for large
// packages otherwise). Begin is called at most once, after the upstream
// answered (a package's size and sha256 are always known by then, from the
// upstream's repodata); it returns the writer for the body. All but the last
// byte are written while the file downloads, the last byte only once the
// file is verified and stored, so a client never receives a whole file that
// turns out to be corrupt: it sees the response cut short. The writer is
// written from a goroutine of its own (see follower), never after
// GetStreaming returned.
type Sink interface {
	Begin(res Result, size int64) io.Writer
}

// GetStreaming is Get with a cold fetch of a package file streamed to sink,
// and so is a repodata.json.zst the proxy derives but has not derived yet
// (compressed at conda.FastZstd as the upstream's repodata.json arrives,
// or from the stored copy; the stored .zst replaces it when its derived set
// is published). If sink's Begin was called, an error means the response
// was cut short.
func (p *Proxy) GetStreaming(ctx context.Context, ch *v1.Channel, path string, sink Sink) (Result, error) {
	return p.get(ctx, ch, path, sink, false)
}

func (p *Proxy) get(ctx context.Context, ch *v1.Channel, path string, sink Sink, ready bool) (Result, error) {
	if err := checkPath(path); err != nil {
		return Result{}, fmt.Errorf("%w: %s/%s: %v", ErrNotFound, ch.Name, path, err)
	}
	if subdir, file, ok := strings.Cut(path, "/"); ok && conda.ValidSubdir(subdir) && isDerivedFile(file) {
		return p.getDerivable(ctx, ch, subdir, file, ready, sink) // an upstream 404 means: derive it
	}
	if p.neg.has(key(ch.Name, path), p.cfg.Now()) {
		return Result{}, fmt.Errorf("%w: %s/%s", ErrNotFound, ch.Name, path)
	}
	if conda.IsPackageFile(path) {
		return p.getPackage(ctx, ch, path, sink)
	}
	res, err := p.getIndex(ctx, ch, path)
	if subdir, file, _ := strings.Cut(path, "/"); err == nil && file == "repodata.json" {
		res = p.servedIndex(ctx, ch, subdir, res)
	}
	return res, err
}

// latestIndex returns the proxy's latest copy of index file path (which
// clients may not be served yet: see servedIndex).
func (p *Proxy) latestIndex(ctx context.Context, ch *v1.Channel, path string) (Result, error) {
	if err := checkPath(path); err != nil {
		return Result{}, fmt.Errorf("%w: %s/%s: %v", ErrNotFound, ch.Name, path, err)
	}
	if p.neg.has(key(ch.Name, path), p.cfg.Now()) {
		return Result{}, fmt.Errorf("%w: %s/%s", ErrNotFound, ch.Name, path)
	}
	return p.getIndex(ctx, ch, path)
}

// groupAnchor returns the file whose presence upstream says whether the
// upstream publishes file's group (the shards and their index; the
// current_repodata.json variants) or the proxy derives it.
func groupAnchor(file string) string {
	switch {
	case strings.HasPrefix(file, shardsDir):
		return fileShardIndex
	case strings.HasPrefix(file, fileCurrent):
		return fileCurrent
	}
	return file
}

// getDerivable answers a file the proxy derives when the upstream does not
// publish its group: from the upstream when it does (its anchor is cached,
// or the upstream has it), else from the subdir's derived set.
func (p *Proxy) getDerivable(ctx context.Context, ch *v1.Channel, subdir, file string, ready bool, sink Sink) (Result, error) {
	path, anchor := subdir+"/"+file, subdir+"/"+groupAnchor(file)
	if e, err := p.cat.ProxyEntry(ctx, ch.Name, anchor); err == nil && e.Status == http.StatusOK && !strings.HasPrefix(e.Etag, legacyDerivedPrefix) {
		return p.getIndex(ctx, ch, path)
	} else if err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return Result{}, err
	}
	if !p.neg.has(key(ch.Name, anchor), p.cfg.Now()) {
		// Not asked lately: ask the upstream for the anchor.
		_, err := p.getIndex(ctx, ch, anchor)
		if err == nil {
			return p.getIndex(ctx, ch, path)
		}
		if !errors.Is(err, ErrNotFound) {
			return Result{}, err
		}
	}
	if file == fileZst && sink != nil {
		// No set yet, or its .zst still being compressed (lazyVariants):
		// streamed as it is compressed rather than waited for.
		if s, err := p.currentSet(ctx, ch, subdir); err == nil && (s == nil || !s.files[fileZst].Defined()) {
			if s != nil { // (its derivation started it; not after a restart)
				p.goBackground(func(ctx context.Context) { _, _ = p.lazyVariant(ctx, ch, subdir, fileZst, s) })
			}
			return p.streamZst(ctx, ch, subdir, sink)
		}
	}
	return p.derivedFile(ctx, ch, subdir, file, ready)
}

// legacyDerivedPrefix marks the replicated entries of files an earlier
// version derived ("derived:<source CID>"): derived files are node-local
// now, and such entries are ignored.
const legacyDerivedPrefix = "derived:"

// getIndex answers an index file (anything but a package).
func (p *Proxy) getIndex(ctx context.Context, ch *v1.Channel, path string) (Result, error) {
	e, err := p.cat.ProxyEntry(ctx, ch.Name, path)
	if err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return Result{}, err
	}
	if e != nil && e.Status != http.StatusOK {
		e = nil // a 404 replicated by an older version: not trusted any more
	}
	if e != nil && strings.HasPrefix(e.Etag, legacyDerivedPrefix) {
		e = nil
	}
	validated, refresh := time.Time{}, path
	if e != nil {
		validated = time.Unix(e.ValidatedUnix, 0)
	}
	if e != nil {
		if h, ok := p.stored(ctx, ch.Name, path, e); ok {
			age := p.cfg.Now().Sub(validated)
			res := Result{CID: h.cid, ModTime: h.mod, Age: age, Immutable: isImmutable(path)}
			if res.Immutable || age < ttl(ch) {
				return res, nil
			}
			// Past the TTL: answer now, revalidate in the background.
			p.refreshAsync(ch, refresh)
			p.mu.Lock()
			_, res.Stale = p.failures[key(ch.Name, refresh)]
			p.mu.Unlock()
			return res, nil
		}
	}
	v, err, _ := p.sf.Do(key(ch.Name, path), func() (any, error) {
		return p.fetch(context.WithoutCancel(ctx), ch, path, nil)
	})
	if err != nil {
		return Result{}, err
	}
	res := v.(Result)
	res.Fetched = true
	return res, nil
}

// getPackage answers a package file by its record in the subdir's derived
// set (packageEntry): the blob named by its sha256, fetched and verified
// first if it is not stored yet.
func (p *Proxy) getPackage(ctx context.Context, ch *v1.Channel, path string, sink Sink) (Result, error) {
	subdir, fn, _ := strings.Cut(path, "/")
	w, err := p.packageEntry(ctx, ch, subdir, fn)
	if err != nil {
		return Result{}, err
	}
	e, err := p.cat.ProxyEntry(ctx, ch.Name, path)
	if err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return Result{}, err
	}
	if e != nil && e.Status == http.StatusOK {
		if h, ok := p.stored(ctx, ch.Name, path, e); ok && h.cid == w.cid {
			return Result{CID: h.cid, ModTime: h.mod, Age: p.cfg.Now().Sub(time.Unix(e.ValidatedUnix, 0)), Immutable: true}, nil
		}
	}
	// The function runs in the first caller's goroutine: only that
	// caller's sink can stream; the others wait for the stored file, which
	// the download never holds back for the streaming client.
	var st *stream
	if sink != nil {
		st = &stream{sink: sink}
	}
	v, err, _ := p.sf.Do(key(ch.Name, path)+"\x00"+w.cid.KeyString(), func() (any, error) {
		return p.fetchPackage(context.WithoutCancel(ctx), ch, path, w, st)
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

func ttl(ch *v1.Channel) time.Duration {
	if ch.Ttl <= 0 {
		return 0
	}
	return time.Duration(ch.Ttl) * time.Second
}

// negativeTTL is how long an upstream 404 of ch is remembered.
func (p *Proxy) negativeTTL(ch *v1.Channel) time.Duration {
	if t := ttl(ch); t > 0 && t < p.cfg.NegativeTTL {
		return t
	}
	return p.cfg.NegativeTTL
}

// notFound remembers that the upstream of ch has no path, and returns
// ErrNotFound.
func (p *Proxy) notFound(ch *v1.Channel, path string) error {
	now := p.cfg.Now()
	p.neg.add(key(ch.Name, path), now.Add(p.negativeTTL(ch)), now)
	return fmt.Errorf("%w: %s/%s", ErrNotFound, ch.Name, path)
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
	started := p.goBackground(func(bg context.Context) {
		ctx, cancel := context.WithTimeout(bg, p.cfg.RefreshTimeout)
		defer cancel()
		_, err, _ := p.sf.Do(k, func() (any, error) {
			e, _ := p.cat.ProxyEntry(ctx, ch.Name, path)
			if e != nil && p.cfg.Now().Sub(time.Unix(e.ValidatedUnix, 0)) < ttl(ch) {
				return nil, nil // someone refreshed it meanwhile
			}
			return p.fetch(ctx, ch, path, e)
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
	})
	if !started {
		p.mu.Lock()
		delete(p.refreshing, k)
		p.mu.Unlock()
	}
}

// stream is a cold fetch's way to the client that caused it.
type stream struct {
	sink Sink
	f    *follower // set once the sink began
}

func (p *Proxy) request(ch *v1.Channel, path string, maxBytes int64) upstream.Request {
	return upstream.Request{URL: upstream.Join(ch.MirrorChannelUrl, path), Authorization: ch.GetMetadata().GetUpstreamAuthorization(), MaxBytes: maxBytes, Restricted: ch.UpstreamRestricted}
}

// fetch gets index file path from the upstream (conditionally when cached
// is set), stores it and records the entry. A subdir's repodata.json that
// changed starts the derivation of the subdir's new derived set, if it
// has one.
func (p *Proxy) fetch(ctx context.Context, ch *v1.Channel, path string, cached *v1.ProxyEntry) (Result, error) {
	return p.fetchTee(ctx, ch, path, cached, nil)
}

// fetchTee is fetch that also copies the body to tee as it arrives (tee's
// errors are its own: they never fail the fetch).
func (p *Proxy) fetchTee(ctx context.Context, ch *v1.Channel, path string, cached *v1.ProxyEntry, tee io.Writer) (Result, error) {
	start := time.Now()
	req := p.request(ch, path, p.cfg.MaxIndexSize)
	if cached != nil && cached.Status == http.StatusOK && !strings.HasPrefix(cached.Etag, legacyDerivedPrefix) {
		req.IfNoneMatch, req.IfModifiedSince = cached.Etag, cached.LastModified
	}
	resp, err := p.up.Get(ctx, req)
	if errors.Is(err, upstream.ErrNotFound) {
		return Result{}, p.notFound(ch, path)
	}
	if errors.Is(err, upstream.ErrTooLarge) {
		return Result{}, fmt.Errorf("%w: %s/%s: %v", ErrTooLarge, ch.Name, path, err)
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
	subdir, file, _ := strings.Cut(path, "/")
	var ps *prescan // the derivation's scan, on the body as it arrives
	if file == "repodata.json" && conda.ValidSubdir(subdir) && !p.cfg.NoScanWhileFetching {
		ps = p.startPrescan(ch, subdir)
	}
	defer func() {
		if ps != nil { // not kept for a derivation
			ps.discard(errPrescanUnused)
		}
	}()
	body := &readTracker{r: resp.Body}
	var tees []io.Writer
	if ps != nil {
		tees = append(tees, ps.body)
	}
	if tee != nil {
		tees = append(tees, tee)
	}
	if len(tees) > 0 {
		body.r = io.TeeReader(resp.Body, io.MultiWriter(tees...))
	}
	info, err := p.blobs.Put(ctx, body, store.PutOptions{MaxSize: p.cfg.MaxIndexSize})
	if errors.Is(err, store.ErrTooLarge) || errors.Is(body.err, upstream.ErrTooLarge) {
		return Result{}, fmt.Errorf("%w: %s/%s is larger than %d bytes", ErrTooLarge, ch.Name, path, p.cfg.MaxIndexSize)
	}
	if err := p.bodyErr(body, err, req.URL); err != nil {
		return Result{}, fmt.Errorf("store %s/%s: %w", ch.Name, path, err)
	}
	if sum, ok := namedBySHA256(file); ok && !info.CID.Equals(shardCID(sum)) {
		// Clients cache a shard by its name forever, and so would this
		// proxy: what does not hash to it is not kept (swept unreferenced).
		return Result{}, fmt.Errorf("%w: %s/%s does not hash to its name", ErrCorrupt, ch.Name, path)
	}
	e := &v1.ProxyEntry{Channel: ch.Name, Path: path, Cid: info.CID.String(), Etag: resp.ETag, LastModified: resp.LastModified, ValidatedUnix: p.cfg.Now().Unix(), Size: info.Size, Status: http.StatusOK}
	if err := p.record(ctx, e); err != nil {
		return Result{}, err
	}
	if file == "repodata.json" {
		p.log.Info("fetched upstream index", "channel", ch.Name, "path", path, "bytes", info.Size, "changed", cached == nil || cached.Cid != e.Cid, "scanned_meanwhile", ps != nil, "took", time.Since(start))
	}
	if file == "repodata.json" && (cached == nil || cached.Cid != e.Cid) {
		// Derive the new set now, in the background (the previous one is
		// served meanwhile), not when a client next asks: the package
		// records come from it too.
		if s, err := p.currentSet(ctx, ch, subdir); err == nil && (s == nil || !s.src.Equals(info.CID)) {
			if ps != nil {
				p.keepPrescan(ch, ps, info.CID)
				ps = nil
			}
			p.deriveAsync(ch, subdir, info.CID)
		}
	}
	if file == fileShardIndex && (cached == nil || cached.Cid != e.Cid) {
		// Decode it now for package records (upshards.go): a client asks
		// for packages only after reading it and solving.
		p.goBackground(func(ctx context.Context) { p.upstreamIndex(ctx, ch, subdir, info.CID) })
	}
	return Result{CID: info.CID, ModTime: modTime(e), Immutable: isImmutable(path)}, nil
}

var errPrescanUnused = errors.New("proxy: the download needs no derivation")

// bodyErr tells an upstream that broke off (truncated, reset) from a local
// failure of a Put of its body; either way nothing was stored.
func (p *Proxy) bodyErr(body *readTracker, putErr error, url string) error {
	if body.err != nil && !errors.Is(body.err, io.EOF) {
		return fmt.Errorf("%w: %s: %v", upstream.ErrUnavailable, upstream.Redact(url), body.err)
	}
	return putErr
}

// fetchPackage stores the package file path whose upstream record is w,
// verified against the record's sha256 and size (the download stops at
// the record's size, counted decoded and on the wire), and records it.
// Bytes already stored (under another path or channel, or an earlier
// record) are not fetched again.
func (p *Proxy) fetchPackage(ctx context.Context, ch *v1.Channel, path string, w want, st *stream) (Result, error) {
	now := p.cfg.Now()
	if info, err := p.blobs.Adopt(ctx, w.cid); err == nil && info.Size == w.size {
		e := &v1.ProxyEntry{Channel: ch.Name, Path: path, Cid: w.cid.String(), ValidatedUnix: now.Unix(), Size: w.size, Status: http.StatusOK}
		if err := p.record(ctx, e); err != nil {
			return Result{}, err
		}
		return Result{CID: w.cid, ModTime: now, Immutable: true}, nil
	}
	req := p.request(ch, path, w.size)
	resp, err := p.up.Get(ctx, req)
	switch {
	case errors.Is(err, upstream.ErrNotFound):
		return Result{}, p.notFound(ch, path) // listed, but not there
	case errors.Is(err, upstream.ErrTooLarge):
		return Result{}, fmt.Errorf("%w: %s/%s: %v", ErrCorrupt, ch.Name, path, err)
	case err != nil:
		return Result{}, err
	case resp.NotModified:
		return Result{}, fmt.Errorf("%w: %s: unasked 304", upstream.ErrUnavailable, upstream.Redact(req.URL))
	}
	defer resp.Body.Close()
	sum, err := store.SHA256Of(w.cid)
	if err != nil {
		return Result{}, err
	}
	body := &readTracker{r: resp.Body}
	var fol *follower
	if st != nil {
		mod := lastModified(resp.LastModified, now)
		if out := st.sink.Begin(Result{CID: w.cid, ModTime: mod, Immutable: true, Fetched: true}, w.size); out != nil {
			fol = newFollower(out, w.size)
			st.f = fol
			defer fol.abort() // unless finished first
			body.r = io.TeeReader(resp.Body, fol)
		}
	}
	info, err := p.blobs.Put(ctx, body, store.PutOptions{WantSHA256: sum, WantSize: w.size, WantSizeSet: true, MaxSize: w.size})
	if errors.Is(err, store.ErrDigestMismatch) || errors.Is(err, store.ErrSizeMismatch) || errors.Is(err, store.ErrTooLarge) || errors.Is(body.err, upstream.ErrTooLarge) {
		return Result{}, fmt.Errorf("%w: %s: %v", ErrCorrupt, upstream.Redact(req.URL), err)
	}
	if err := p.bodyErr(body, err, req.URL); err != nil {
		return Result{}, fmt.Errorf("store %s/%s: %w", ch.Name, path, err)
	}
	e := &v1.ProxyEntry{Channel: ch.Name, Path: path, Cid: info.CID.String(), Etag: resp.ETag, LastModified: resp.LastModified, ValidatedUnix: now.Unix(), Size: info.Size, Status: http.StatusOK}
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
	return Result{CID: info.CID, ModTime: modTime(e), Immutable: true}, nil
}

func (p *Proxy) record(ctx context.Context, es ...*v1.ProxyEntry) error {
	_, err := p.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutProxyEntries{PutProxyEntries: &v1.PutProxyEntriesOp{Entries: es}}})
	return err
}

func cloneEntry(e *v1.ProxyEntry) *v1.ProxyEntry { return proto.Clone(e).(*v1.ProxyEntry) }

// acquire takes a slot for a derivation (Config.Derivations); release
// gives it back.
func (p *Proxy) acquire(ctx context.Context) (release func(), err error) {
	select {
	case p.work <- struct{}{}:
		return func() { <-p.work }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
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
