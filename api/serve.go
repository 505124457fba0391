package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/indexer"
	"github.com/condamesh/condamesh/proxy"
	"github.com/condamesh/condamesh/store"
	"github.com/condamesh/condamesh/upstream"
	"github.com/ipfs/go-cid"
)

// Cache lifetimes of served files. Index files live for the channel's ttl
// (Quetz's Cache-Control: max-age={channel.ttl}).
const (
	cacheImmutable = "public, max-age=31536000, immutable"
	cacheMissing   = "no-cache"
)

// serveGet is GET|HEAD /get/{channel}[/{path...}]: package files from the
// blob store, index files from the indexer, with strong content ETags,
// conditional requests (304), ranges (206) and zero-copy file serving.
func (s *Server) serveGet(w http.ResponseWriter, r *http.Request) {
	s.serveChannelFile(w, r, r.PathValue("channel"), r.PathValue("path"))
}

// serveChannelFile answers the file at p (relative, possibly empty) of
// channel.
func (s *Server) serveChannelFile(w http.ResponseWriter, r *http.Request, channel, p string) {
	ctx := r.Context()
	id, err := s.identify(ctx, r.Header)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ch, err := s.channelView(ctx, id, channel)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if p == "" || strings.HasSuffix(p, "/") {
		p += "index.html"
	}
	clean := path.Clean("/" + p)[1:]
	if clean != p || strings.Contains(p, "\\") {
		s.notFound(w, r, ch, p)
		return
	}
	if to := proxylistRedirect(ch, p); to != "" {
		s.countDownload(r, ch, path.Dir(p), path.Base(p))
		w.Header().Set("Cache-Control", cacheMissing)
		http.Redirect(w, r, to, http.StatusTemporaryRedirect)
		return
	}
	if channelKind(ch) == "proxy" {
		s.serveProxied(w, r, ch, p)
		return
	}
	dir, file := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" && conda.ValidSubdir(file) && !strings.Contains(file, ".") {
		dir, file, p = file, "index.html", file+"/index.html" // /get/c/linux-64 -> subdir listing
	}
	if conda.IsPackageFile(file) && dir != "" && !strings.Contains(dir, "/") {
		s.servePackage(w, r, ch, dir, file)
		return
	}
	s.serveIndex(w, r, ch, dir, p)
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request, ch *v1.Channel, p string) {
	w.Header().Set("Cache-Control", cacheMissing)
	s.writeError(w, r, apiErr(ErrNotFound, "%s/%s not found", ch.Name, p))
}

func (s *Server) servePackage(w http.ResponseWriter, r *http.Request, ch *v1.Channel, subdir, filename string) {
	ctx := r.Context()
	v, err := s.cat.Version(ctx, ch.Name, subdir, filename)
	if errors.Is(err, catalog.ErrNotFound) {
		s.notFound(w, r, ch, subdir+"/"+filename)
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := store.CIDFromHex(v.Sha256)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.countDownload(r, ch, subdir, filename)
	s.serveBlob(ctx, w, r, ch, subdir+"/"+filename, c, time.Unix(v.ModifiedUnix, 0), cacheImmutable)
}

func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request, ch *v1.Channel, subdir, p string) {
	ctx := r.Context()
	if s.idx == nil {
		s.notFound(w, r, ch, p)
		return
	}
	// Read-your-writes: give the indexer a bounded moment to publish the
	// latest change before answering with the previous version.
	if fresh, _ := s.idx.Fresh(ctx, ch.Name, subdir); !fresh {
		wctx, cancel := context.WithTimeout(ctx, s.cfg.IndexWait)
		if err := s.idx.WaitFresh(wctx, ch.Name, subdir); err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			s.log.Warn("wait for fresh index", "channel", ch.Name, "subdir", subdir, "err", err)
		}
		cancel()
	}
	pub, err := s.idx.File(ctx, ch.Name, p)
	if errors.Is(err, indexer.ErrNotFound) {
		s.notFound(w, r, ch, p)
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cc := s.maxAges.get(max(ch.Ttl, 0), publicMaxAge)
	if strings.Contains(p, "/shards/") {
		cc = cacheImmutable
	}
	encoding := ""
	if gzipVariant(p) {
		// Both forms vary with Accept-Encoding, and each has its own ETag
		// (its own CID), so caches and revalidations never mix them up.
		w.Header()["Vary"] = varyAcceptEncoding
		if acceptsGzip(r.Header) {
			gz, err := s.idx.File(ctx, ch.Name, p+".gz")
			switch {
			case err == nil:
				pub, encoding = gz, "gzip"
			case !errors.Is(err, indexer.ErrNotFound): // not yet published: identity
				s.writeError(w, r, err)
				return
			}
		}
	}
	s.serveEncodedBlob(ctx, w, r, ch, p, pub.CID, pub.ModTime, cc, encoding)
}

var varyAcceptEncoding = []string{"Accept-Encoding"}

// serveBlob answers the blob c as the file p.
func (s *Server) serveBlob(ctx context.Context, w http.ResponseWriter, r *http.Request, ch *v1.Channel, p string, c cid.Cid, mod time.Time, cacheControl string) {
	s.serveEncodedBlob(ctx, w, r, ch, p, c, mod, cacheControl, "")
}

// serveEncodedBlob answers the blob c as the file p, encoded with the
// Content-Encoding encoding ("" for none) for 200 and 206 answers.
func (s *Server) serveEncodedBlob(ctx context.Context, w http.ResponseWriter, r *http.Request, ch *v1.Channel, p string, c cid.Cid, mod time.Time, cacheControl, encoding string) {
	etag := s.etags.get(c, quotedCID)
	if inm := headerValue(r.Header, "If-None-Match"); inm != "" && etagMatch(inm, etag) {
		// The ETag is the content's CID: a match is decided without
		// touching the blob.
		h := w.Header()
		h["Etag"] = []string{etag}
		h["Cache-Control"] = []string{cacheControl}
		if !mod.IsZero() {
			h["Last-Modified"] = []string{s.dates.get(mod.Unix(), httpDate)}
		}
		w.WriteHeader(http.StatusNotModified)
		return
	}
	blob, err := s.blobs.Open(ctx, c)
	if errors.Is(err, store.ErrNotFound) {
		if conda.IsPackageFile(path.Base(p)) {
			// Listed in the channel, bytes not on this node (uploaded on
			// another node of the cluster; peer fills are not there yet).
			w.Header().Set("Cache-Control", "no-store")
			s.writeError(w, r, apiErr(ErrNotFound, "%s/%s is in the channel, but its bytes are not on this node; download it from the node it was uploaded to", ch.Name, p))
			return
		}
		s.notFound(w, r, ch, p)
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer blob.Close()
	if encoding != "" {
		w.Header()["Content-Encoding"] = []string{encoding}
	}
	if !plainGet(r.Header) {
		s.blobHeader(w.Header(), etag, cacheControl, p, blob.Info.Size, false, mod)
		http.ServeContent(w, r, "", mod, blob.Content()) // ranges and date preconditions
		return
	}
	// What ServeContent answers to a request with no range and no
	// precondition left to evaluate, without its parsing.
	s.blobHeader(w.Header(), etag, cacheControl, p, blob.Info.Size, true, mod)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = io.CopyN(w, blob.Content(), blob.Info.Size)
	}
}

// blobHeader sets the fields of a 200 answer with a blob's bytes; for a
// complete answer also Content-Length and Last-Modified (ServeContent sets
// them itself). One backing array holds the values (each slice capped, so
// an Add by anyone copies instead of overwriting a neighbour).
func (s *Server) blobHeader(h http.Header, etag, cacheControl, p string, size int64, complete bool, mod time.Time) {
	n := strconv.FormatInt(size, 10)
	v := [...]string{etag, cacheControl, contentType(p), n, "bytes", n, ""}
	h["Etag"] = v[0:1:1]
	h["Cache-Control"] = v[1:2:2]
	h["Content-Type"] = v[2:3:3]
	h["Content-Size"] = v[3:4:4]
	h["Accept-Ranges"] = v[4:5:5]
	if !complete {
		return
	}
	h["Content-Length"] = v[5:6:6]
	if !mod.IsZero() && !mod.Equal(time.Unix(0, 0)) {
		v[6] = s.dates.get(mod.Unix(), httpDate)
		h["Last-Modified"] = v[6:7:7]
	}
}

// plainGet reports a request without a range or a precondition other than
// If-None-Match (which serveBlob has already evaluated).
func plainGet(h http.Header) bool {
	_, ims := h["If-Modified-Since"]
	return wholeGet(h) && !ims
}

// wholeGet tells a GET whose answer is the whole file, with or without
// validators to revalidate a copy: no range, no precondition that could
// make it fail.
func wholeGet(h http.Header) bool {
	for _, k := range [...]string{"Range", "If-Range", "If-Match", "If-Unmodified-Since"} {
		if _, ok := h[k]; ok {
			return false
		}
	}
	return true
}

func publicMaxAge(secs int64) string { return "public, max-age=" + strconv.FormatInt(secs, 10) }

func quotedCID(c cid.Cid) string { return `"` + c.String() + `"` }

func httpDate(unix int64) string { return time.Unix(unix, 0).UTC().Format(http.TimeFormat) }

// textCache memoises strings the read path formats again and again (the
// ETag of a CID, the HTTP date of a modification time). It holds at most
// textCacheMax entries and starts over when full.
type textCache[K comparable] struct {
	mu sync.RWMutex
	m  map[K]string
}

const textCacheMax = 1 << 14

func (c *textCache[K]) get(k K, format func(K) string) string {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = format(k)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= textCacheMax {
		c.m = make(map[K]string)
	}
	c.m[k] = v
	c.mu.Unlock()
	return v
}

// proxySink answers a cold proxy miss of a package while the proxy
// downloads it (proxy.Sink): the head as serveBlob would send it, then the
// bytes as they arrive.
type proxySink struct {
	s     *Server
	w     http.ResponseWriter
	p     string
	cc    string // Cache-Control of a response of unknown size
	began bool
}

func (k *proxySink) Begin(res proxy.Result, size int64) io.Writer {
	k.began = true
	h := k.w.Header()
	if size < 0 {
		// Made as it is sent (a cold repodata.json.zst): no length, no
		// ETag (the stored file that replaces it has other bytes).
		h["Content-Type"] = []string{contentType(k.p)}
		h["Cache-Control"] = []string{k.cc}
	} else {
		k.s.blobHeader(h, k.s.etags.get(res.CID, quotedCID), cacheImmutable, k.p, size, true, res.ModTime)
	}
	h["Age"] = []string{"0"}
	k.w.WriteHeader(http.StatusOK)
	if rc := http.NewResponseController(k.w); rc.Flush() == nil { // the head goes now
		return flushingWriter{k.w, rc}
	}
	return k.w
}

// flushingWriter sends each write at once: a streamed answer's bytes reach
// the client as they arrive rather than once the server's write buffer
// fills (a package smaller than the buffer would otherwise wait for its
// whole download, its check and its record). The writes it gets are the
// download's or the compression's pieces, coalesced while the client
// lags, so a flush each costs little.
type flushingWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (w flushingWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err == nil {
		err = w.rc.Flush()
	}
	return n, err
}

// contentType names the media type of a served path. Compressed files are
// served as themselves (repodata.json.gz is application/gzip); only the
// negotiated gzip form of repodata.json is sent as JSON with a
// Content-Encoding.
func contentType(p string) string {
	switch {
	case strings.HasSuffix(p, ".gz"):
		return "application/gzip"
	case strings.HasSuffix(p, ".json"):
		return "application/json"
	case strings.HasSuffix(p, ".html"):
		return "text/html; charset=utf-8"
	case strings.HasSuffix(p, ".msgpack.zst"):
		return "application/octet-stream"
	case strings.HasSuffix(p, ".bz2"):
		return "application/x-bzip2"
	case strings.HasSuffix(p, ".zst"):
		return "application/zstd"
	}
	return "application/octet-stream"
}

// etagMatch implements If-None-Match's weak comparison against one strong
// ETag: "*" or any listed tag (with or without W/) equal to etag.
func etagMatch(header, etag string) bool {
	for rest := header; rest != ""; {
		var t string
		t, rest, _ = strings.Cut(rest, ",")
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// proxylistRedirect returns the upstream URL of a package of a proxy or
// mirror channel whose name is in the channel's proxylist (Quetz: served by
// the upstream, e.g. for licences that forbid redistribution), else "".
func proxylistRedirect(ch *v1.Channel, p string) string {
	if channelKind(ch) == "local" || !conda.IsPackageFile(p) {
		return ""
	}
	fn, err := conda.ParseFilename(path.Base(p))
	if err != nil {
		return ""
	}
	for _, name := range ch.GetMetadata().GetProxylist().GetItems() {
		if name == fn.Name {
			to := upstream.Join(ch.MirrorChannelUrl, p)
			if upstream.Redact(to) != to {
				return "" // never hand a client the upstream's credentials
			}
			return to
		}
	}
	return ""
}

// serveProxied answers a file of a proxy channel from the proxy cache,
// with Age always and a Warning when the copy is stale because the upstream
// is unreachable.
func (s *Server) serveProxied(w http.ResponseWriter, r *http.Request, ch *v1.Channel, p string) {
	if s.proxy == nil {
		s.notFound(w, r, ch, p)
		return
	}
	var res proxy.Result
	var err error
	if strings.HasSuffix(p, "/repodata.json.zst") && r.Method == http.MethodGet && wholeGet(r.Header) {
		// Not derived yet: the proxy may stream it as it compresses it.
		// A revalidation too (If-None-Match, If-Modified-Since): a file
		// not made yet cannot match, and a 200 always answers one, where
		// waiting for the compression would hold the client for seconds
		// at conda-forge's size.
		sink := &proxySink{s: s, w: w, p: p, cc: "no-cache"}
		res, err = s.proxy.GetStreaming(r.Context(), ch, p, sink)
		if sink.began {
			if err != nil {
				s.log.Warn("proxy index stream failed", "channel", ch.Name, "path", p, "err", err)
				panic(http.ErrAbortHandler)
			}
			if s.prom != nil {
				s.prom.ProxyRequest("miss")
			}
			return
		}
	} else if conda.IsPackageFile(p) && r.Method == http.MethodGet && plainGet(r.Header) && headerValue(r.Header, "If-None-Match") == "" {
		sink := &proxySink{s: s, w: w, p: p}
		res, err = s.proxy.GetStreaming(r.Context(), ch, p, sink)
		if sink.began {
			if err != nil {
				// The head is sent: cutting the connection is the only way
				// left to tell the client its download failed.
				s.log.Warn("proxy download failed while streaming", "channel", ch.Name, "path", p, "err", err)
				panic(http.ErrAbortHandler)
			}
			s.countDownload(r, ch, path.Dir(p), path.Base(p))
			if s.prom != nil {
				s.prom.ProxyRequest("miss")
			}
			return
		}
	} else {
		res, err = s.proxy.Get(r.Context(), ch, p)
	}
	if errors.Is(err, proxy.ErrNotFound) {
		s.notFound(w, r, ch, p)
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if conda.IsPackageFile(p) {
		s.countDownload(r, ch, path.Dir(p), path.Base(p))
	}
	if s.prom != nil {
		result := "hit"
		switch {
		case res.Fetched:
			result = "miss"
		case res.Stale:
			result = "stale"
		}
		s.prom.ProxyRequest(result)
	}
	cc := s.maxAges.get(int64(min(max(ch.Ttl, 0), 300)), publicMaxAge)
	if res.Immutable {
		cc = cacheImmutable
	}
	encoding := ""
	if gzipVariant(p) {
		// As for local channels: the gzip form (derived from the same
		// repodata.json, once) for clients that ask for it, under its own
		// ETag; identity when it cannot be had.
		w.Header()["Vary"] = varyAcceptEncoding
		if acceptsGzip(r.Header) {
			if gz, err := s.proxy.GetReady(r.Context(), ch, p+".gz"); err == nil {
				res.CID, res.ModTime, encoding = gz.CID, gz.ModTime, "gzip"
			} else if !errors.Is(err, proxy.ErrNotFound) {
				s.log.Warn("gzip form of a proxied index", "channel", ch.Name, "path", p, "err", err)
			}
		}
	}
	w.Header()["Age"] = []string{strconv.FormatInt(int64(res.Age/time.Second), 10)}
	if res.Stale {
		w.Header().Set("Warning", `110 condamesh "Response is Stale"`)
		w.Header().Add("Warning", `111 condamesh "Revalidation Failed"`)
	}
	s.serveEncodedBlob(r.Context(), w, r, ch, p, res.CID, res.ModTime, cc, encoding)
}

// HotPath reports whether a GET or HEAD of the request target is a conda
// client's channel-file request (/get/... or /t/<token>/get/...), which the
// node answers on its lean HTTP/1.1 path (package hotpath).
func HotPath(target string) bool {
	if rest, ok := strings.CutPrefix(target, "/t/"); ok {
		_, target, _ = strings.Cut(rest, "/")
		target = "/" + target
	}
	return strings.HasPrefix(target, "/get/")
}
