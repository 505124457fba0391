// Package mirror synchronises mirror channels from their upstream: it
// discovers subdirs (channeldata.json, else the known list; noarch always),
// reads each subdir's repodata (the patched repodata.json, or Quetz's
// preference repodata_from_packages.json when the channel asks), filters it
// (includelist / excludelist), decides what is new or changed (sha256, then
// md5, as Quetz), downloads (pipelined on a few connections, with a
// one-at-a-time fallback that retries), verifies every file against the
// upstream sha256 and size before it is published, and publishes in
// batches (every 10,000 files or 30 s, each as Raft commands of at most
// 2,500 versions). A file that keeps failing is recorded on the task (the
// first errors; jobs.ReportError) and skipped; the sync goes on. Files already in the blob store are never
// downloaded again, which makes an interrupted sync resume where it
// stopped. A sync whose context ends (its job cancelled) cuts the
// downloads in flight and publishes nothing more; what it published
// before is whole (verified files, in whole batches). While a sync runs, the indexer holds back rebuilding the
// channel's indexes (readers still get fresh ones).
package mirror

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/jobs"
	"github.com/condamesh/condamesh/store"
	"github.com/condamesh/condamesh/upstream"
	"github.com/ipfs/go-cid"
	"golang.org/x/sync/errgroup"
)

// ErrNotMirror is returned for a channel that is not a mirror channel.
var ErrNotMirror = errors.New("mirror: not a mirror channel")

// KnownSubdirs is tried when the upstream has no usable channeldata.json
// (Quetz's list).
var KnownSubdirs = []string{"noarch", "linux-32", "linux-64", "linux-aarch64", "linux-armv6l", "linux-armv7l", "linux-ppc64",
	"linux-ppc64le", "linux-s390x", "osx-64", "osx-arm64", "win-32", "win-64", "zos-z"}

// Proposer replicates catalog commands.
type Proposer interface {
	Propose(ctx context.Context, cmd *v1.Command) (any, error)
}

// Blobs is the blob store as the syncer uses it.
type Blobs interface {
	Put(ctx context.Context, r io.Reader, opt store.PutOptions) (store.BlobInfo, error)
	Has(ctx context.Context, c cid.Cid) bool
	Adopt(ctx context.Context, c cid.Cid) (store.BlobInfo, error)
	Open(ctx context.Context, c cid.Cid) (*store.Blob, error)
	Sync(ctx context.Context) error
}

// syncEvery bounds how much verified download work a crash can lose.
const syncEvery = 250 * time.Millisecond

// Config configures a Syncer.
type Config struct {
	// Concurrency is the number of parallel downloads. Default 8.
	Concurrency int
	// BatchFiles is the most verified files one publish command carries.
	// Default 10000. Downloaded blobs are durable every 250 ms whatever the
	// batch size, so a crash never costs downloads, only republishing.
	BatchFiles int
	// BatchInterval publishes a smaller batch once this long has passed
	// since the last publish, so a long sync shows progress. Default 30 s.
	BatchInterval time.Duration
	// MaxIndexSize bounds an upstream repodata document, decoded and on
	// the wire (the document is held in memory while it is planned).
	// Default 1 GiB.
	MaxIndexSize int64
	// OnProgress, if set, sees every progress report of a sync.
	OnProgress func(channel string, p jobs.Progress)
	// Hold, if set, is called when a sync starts, and what it returns when
	// the sync ends: the indexer spaces the rebuilds of a channel being
	// synchronised (indexer.Indexer.Hold).
	Hold   func(channel string) (release func())
	Logger *slog.Logger
}

// Syncer runs mirror synchronisations.
type Syncer struct {
	cfg   Config
	cat   *catalog.Catalog
	blobs Blobs
	prop  Proposer
	up    *upstream.Client
	log   *slog.Logger
}

// New returns a syncer.
func New(cfg Config, cat *catalog.Catalog, blobs Blobs, prop Proposer, up *upstream.Client) *Syncer {
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 8
	}
	if cfg.BatchFiles == 0 {
		cfg.BatchFiles = 10000
	}
	if cfg.BatchInterval == 0 {
		cfg.BatchInterval = 30 * time.Second
	}
	if cfg.MaxIndexSize == 0 {
		cfg.MaxIndexSize = 1 << 30
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Syncer{cfg: cfg, cat: cat, blobs: blobs, prop: prop, up: up, log: cfg.Logger.With("component", "mirror")}
}

// Mode selects where package records come from.
type Mode int

const (
	// FromRepodata trusts the upstream repodata records (synchronize_repodata).
	FromRepodata Mode = iota
	// FromArchives rebuilds every record from the downloaded archive's
	// info/ files (synchronize).
	FromArchives
)

// candidate is one upstream package file to mirror.
type candidate struct {
	subdir   string
	filename string
	version  *v1.PackageVersion // the upstream's record, made at planning (FromRepodata)
	sha256   []byte
	md5      string
	size     int64
}

// Action returns the job action synchronising the job's channel.
func (s *Syncer) Action(mode Mode) jobs.Action {
	return func(ctx context.Context, j *v1.Job) error { return s.Sync(ctx, j.Channel, j.OwnerId, mode) }
}

// Sync synchronises one mirror channel. Per-file failures are reported in
// the progress and do not fail the sync; an upstream that cannot be reached
// at all does.
func (s *Syncer) Sync(ctx context.Context, channel, owner string, mode Mode) error {
	ch, err := s.cat.Channel(ctx, channel)
	if err != nil {
		return err
	}
	if ch.MirrorChannelUrl == "" || ch.MirrorMode != "mirror" {
		return fmt.Errorf("%w: %s", ErrNotMirror, channel)
	}
	if s.cfg.Hold != nil {
		defer s.cfg.Hold(ch.Name)()
	}
	start := time.Now()
	auth := ch.GetMetadata().GetUpstreamAuthorization()
	subdirs, err := s.subdirs(ctx, ch, auth)
	if err != nil {
		return err
	}
	// Each subdir's repodata document is scanned as it downloads, record
	// by record (the document is never held: memory does not grow with
	// the index), one subdir after another in subdir order as Quetz asks
	// for them; the records the channel's filters do not select are
	// skipped without being parsed.
	plans := make([]subdirPlan, len(subdirs))
	names := repodataNames(ch)
	for i, sd := range subdirs {
		if plans[i], err = s.planSubdir(ctx, ch, sd, auth, mode, names); err != nil {
			return err
		}
	}
	var cands []candidate
	var prog jobs.Progress
	upstreamFiles := map[string]map[string]bool{}
	for i, pl := range plans {
		for _, e := range pl.errors {
			s.fail(ctx, &prog, e)
		}
		if pl.files != nil {
			upstreamFiles[subdirs[i]] = pl.files
		}
		for _, c := range pl.cands {
			prog.FilesTotal++
			prog.BytesTotal += c.size
		}
		cands = append(cands, pl.cands...)
	}
	s.report(ctx, ch.Name, prog)
	s.log.Info("mirror sync planned", "channel", ch.Name, "subdirs", len(subdirs), "files", prog.FilesTotal, "bytes", prog.BytesTotal, "took", time.Since(start))
	dlStart := time.Now()
	if err := s.download(ctx, ch, owner, auth, mode, cands, &prog); err != nil {
		return err
	}
	s.log.Info("mirror sync downloaded", "channel", ch.Name, "files", prog.FilesDone, "errors", prog.Errors, "took", time.Since(dlStart))
	if ch.GetMetadata().GetPrune() {
		if err := s.prune(ctx, ch, upstreamFiles); err != nil {
			return err
		}
	}
	prog.Current = ""
	s.report(ctx, ch.Name, prog)
	if prog.Errors > 0 {
		s.log.Warn("mirror sync finished with errors", "channel", ch.Name, "errors", prog.Errors, "last", prog.LastError)
	}
	return nil
}

// subdirPlan is what one subdir of the upstream asks a sync to do.
type subdirPlan struct {
	cands  []candidate     // files to fetch: new or changed
	files  map[string]bool // the selected upstream files; nil if the subdir was not read
	errors []string        // what could not be planned (the sync goes on)
}

// planSubdir plans one upstream subdir from the first of names the
// upstream has; one that does not parse gives way to the next. A subdir
// the upstream lacks plans nothing; a document that does not parse, or is
// too large, is an error of the plan (the sync goes on with the others);
// any other failure stops the sync.
func (s *Syncer) planSubdir(ctx context.Context, ch *v1.Channel, sd, auth string, mode Mode, names []string) (subdirPlan, error) {
	local, err := s.cat.SubdirVersions(ctx, ch.Name, sd)
	if err != nil {
		return subdirPlan{}, err
	}
	have := make(map[string]*v1.PackageVersion, len(local))
	for _, v := range local {
		have[v.Filename] = v
	}
	sel := newFilter(ch.GetMetadata())
	var lastErr error
	for _, name := range names {
		pl, err := s.scanSubdir(ctx, ch, sd, sd+"/"+name, auth, mode, have, sel)
		switch {
		case err == nil:
			return pl, nil
		case errors.Is(err, upstream.ErrNotFound):
			if lastErr == nil {
				lastErr = err
			}
			continue
		case errors.Is(err, conda.ErrBadRepodata):
			lastErr = err
			continue
		case errors.Is(err, store.ErrTooLarge):
			lastErr = err
		default:
			return subdirPlan{}, err
		}
		break
	}
	if lastErr == nil || errors.Is(lastErr, upstream.ErrNotFound) {
		return subdirPlan{}, nil
	}
	return subdirPlan{errors: []string{fmt.Sprintf("%s: %v", sd, lastErr)}}, nil
}

// scanSubdir plans from the upstream document rel as it downloads, one
// record at a time (the document is never held).
func (s *Syncer) scanSubdir(ctx context.Context, ch *v1.Channel, sd, rel, auth string, mode Mode, have map[string]*v1.PackageVersion, sel *filter) (subdirPlan, error) {
	url := upstream.Join(ch.MirrorChannelUrl, rel)
	resp, err := s.up.Get(ctx, upstream.Request{URL: url, Authorization: auth, MaxBytes: s.cfg.MaxIndexSize, Restricted: ch.UpstreamRestricted})
	if errors.Is(err, upstream.ErrTooLarge) {
		return subdirPlan{}, fmt.Errorf("%s: %w: %v", upstream.Redact(url), store.ErrTooLarge, err)
	}
	if err != nil {
		return subdirPlan{}, err
	}
	defer resp.Body.Close()
	pl := subdirPlan{files: map[string]bool{}}
	_, err = conda.ScanRepodataReader(resp.Body, conda.ScanOptions{Want: sel.selected}, func(r conda.Record) error {
		pl.files[r.Filename] = true
		c, err := newCandidate(sd, r)
		if err != nil {
			pl.errors = append(pl.errors, fmt.Sprintf("%s/%s: %v", sd, r.Filename, err))
			return nil
		}
		if !upToDate(have[r.Filename], c) {
			if mode == FromRepodata {
				c.version = catalog.NewPackageVersion(ch.Name, conda.Record{Filename: r.Filename, Subdir: sd, Fields: r.Fields}, nil, "")
			}
			pl.cands = append(pl.cands, c)
		}
		return nil
	})
	switch {
	case err == nil, errors.Is(err, conda.ErrBadRepodata):
		return pl, err
	case errors.Is(err, upstream.ErrTooLarge):
		return subdirPlan{}, fmt.Errorf("%s: %w: %v", upstream.Redact(url), store.ErrTooLarge, err)
	case ctx.Err() != nil:
		return subdirPlan{}, ctx.Err()
	}
	return subdirPlan{}, fmt.Errorf("%w: %s: %v", upstream.ErrUnavailable, upstream.Redact(url), err)
}

// subdirs reads the upstream channeldata.json; a missing or invalid one
// means "try the known subdirs". noarch is always included.
func (s *Syncer) subdirs(ctx context.Context, ch *v1.Channel, auth string) ([]string, error) {
	body, err := s.get(ctx, ch, "channeldata.json", auth, 64<<20)
	var cd struct {
		Subdirs []string `json:"subdirs"`
	}
	switch {
	case errors.Is(err, upstream.ErrNotFound):
		return KnownSubdirs, nil
	case err != nil:
		return nil, err
	case json.Unmarshal(body, &cd) != nil:
		return KnownSubdirs, nil
	}
	out := []string{"noarch"}
	for _, sd := range cd.Subdirs {
		if conda.ValidSubdir(sd) && sd != "noarch" {
			out = append(out, sd)
		}
	}
	sort.Strings(out[1:])
	return out, nil
}

// repodataNames lists the documents a subdir's records may come from, in
// the order they are tried.
func repodataNames(ch *v1.Channel) []string {
	if ch.GetMetadata().GetPreferRepodataFromPackages() {
		return []string{"repodata_from_packages.json", "repodata.json"}
	}
	return []string{"repodata.json"}
}

// get fetches the channel-relative file rel of ch's upstream, up to limit
// bytes.
func (s *Syncer) get(ctx context.Context, ch *v1.Channel, rel, auth string, limit int64) ([]byte, error) {
	url := upstream.Join(ch.MirrorChannelUrl, rel)
	resp, err := s.up.Get(ctx, upstream.Request{URL: url, Authorization: auth, MaxBytes: limit, Restricted: ch.UpstreamRestricted})
	if errors.Is(err, upstream.ErrTooLarge) {
		return nil, fmt.Errorf("%s: %w: %v", upstream.Redact(url), store.ErrTooLarge, err)
	}
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// The body is bounded (decoded and on the wire) by the upstream client;
	// a known length is allocated once instead of grown by doubling.
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(resp.Body); errors.Is(err, upstream.ErrTooLarge) {
		return nil, fmt.Errorf("%s: %w: %v", upstream.Redact(url), store.ErrTooLarge, err)
	} else if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", upstream.ErrUnavailable, upstream.Redact(url), err)
	}
	return buf.Bytes(), nil
}

// filter is a channel's includelist / excludelist, compiled: an entry
// without glob characters keeps Quetz's meaning (the filename starts with
// it, so exact names too); one with them is an fnmatch glob
// (conda.CompileGlob) on the filename or the package name. An includelist
// wins; an empty list is no list.
type filter struct {
	include  bool // the entries select (includelist), else they exclude
	prefixes []string
	globs    []*conda.Glob
}

func newFilter(md *v1.ChannelMetadata) *filter {
	f := &filter{include: true}
	entries := md.GetIncludelist().GetItems()
	if len(entries) == 0 {
		f.include, entries = false, md.GetExcludelist().GetItems()
	}
	for _, e := range entries {
		if conda.HasGlobMeta(e) {
			f.globs = append(f.globs, conda.CompileGlob(e))
		} else {
			f.prefixes = append(f.prefixes, e)
		}
	}
	return f
}

// selected applies the filter to a filename.
func (f *filter) selected(filename string) bool {
	if len(f.prefixes) == 0 && len(f.globs) == 0 {
		return true
	}
	return f.matches(filename) == f.include
}

func (f *filter) matches(filename string) bool {
	for _, p := range f.prefixes {
		if strings.HasPrefix(filename, p) {
			return true
		}
	}
	if len(f.globs) == 0 {
		return false
	}
	name := filename
	if fn, err := conda.ParseFilename(filename); err == nil {
		name = fn.Name
	}
	for _, g := range f.globs {
		if g.Match(filename) || g.Match(name) {
			return true
		}
	}
	return false
}

// newCandidate reads the digests and size of an upstream record.
func newCandidate(sd string, r conda.Record) (candidate, error) {
	c := candidate{subdir: sd, filename: r.Filename}
	h, _ := r.Fields["sha256"].(string)
	sum, err := hex.DecodeString(h)
	if err != nil || len(sum) != 32 {
		return c, errors.New("upstream record has no valid sha256")
	}
	c.sha256 = sum
	c.md5, _ = r.Fields["md5"].(string)
	switch n := r.Fields["size"].(type) {
	case json.Number:
		c.size, _ = n.Int64()
	case int64:
		c.size = n
	case float64:
		c.size = int64(n)
	}
	return c, nil
}

// upToDate decides by sha256, then md5, whether the local file is the
// upstream one (Quetz's rule).
func upToDate(local *v1.PackageVersion, c candidate) bool {
	if local == nil {
		return false
	}
	if local.Sha256 != "" {
		return local.Sha256 == hex.EncodeToString(c.sha256)
	}
	if local.Md5 != "" && c.md5 != "" {
		return local.Md5 == c.md5
	}
	return false
}

// download fetches the candidates and publishes them in batches.
// Candidates go out pipelined on a few keep-alive connections
// (upstream.GetMany); what that fast path cannot complete goes to a pool
// of workers fetching one file at a time with retries, which records the
// errors. One goroutine publishes, so downloads never wait for a batch to
// be replicated.
func (s *Syncer) download(ctx context.Context, ch *v1.Channel, owner, auth string, mode Mode, cands []candidate, prog *jobs.Progress) error {
	var mu sync.Mutex // guards batch, lastPublish, prog
	var batch []*v1.PackageVersion
	lastPublish := time.Now()
	ready := make(chan struct{}, 1) // a batch is full or old
	// done accounts for one candidate, fetched (v) or failed (err).
	done := func(c *candidate, v *v1.PackageVersion, err error) {
		mu.Lock()
		prog.FilesDone++
		prog.BytesDone += c.size
		prog.Current = c.subdir + "/" + c.filename
		if err != nil {
			s.fail(ctx, prog, fmt.Sprintf("%s/%s: %v", c.subdir, c.filename, err))
		} else if batch = append(batch, v); len(batch) >= s.cfg.BatchFiles || time.Since(lastPublish) > s.cfg.BatchInterval {
			select {
			case ready <- struct{}{}:
			default:
			}
		}
		p := *prog
		mu.Unlock()
		s.report(ctx, ch.Name, p)
	}
	// The publisher takes the batch when it is full or old, and the rest
	// at the end. Between batches it makes downloaded blobs durable every
	// syncEvery (they are written without a sync each), so a crash loses at
	// most that much verified work, and the resumed sync downloads only
	// that again. A batch's blobs are durable before it is proposed.
	finish := make(chan struct{})
	published := make(chan error, 1)
	go func() {
		t := time.NewTicker(syncEvery)
		defer t.Stop()
		var err error
		for {
			last := false
			select {
			case <-t.C:
				if err := s.blobs.Sync(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("sync downloaded blobs", "err", err)
				}
				continue
			case <-ready:
			case <-finish:
				last = true
			}
			mu.Lock()
			vers := batch
			batch, lastPublish = nil, time.Now()
			mu.Unlock()
			if err == nil && len(vers) > 0 && ctx.Err() == nil {
				start := time.Now()
				if err = s.blobs.Sync(ctx); err == nil {
					err = s.propose(ctx, vers, owner)
				}
				if err == nil {
					s.log.Info("mirror batch published", "channel", ch.Name, "files", len(vers), "took", time.Since(start))
				}
			}
			if last {
				published <- err
				return
			}
		}
	}()

	slow := make(chan *candidate)
	var wg sync.WaitGroup
	for range s.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range slow {
				v, err := s.fetchOne(ctx, ch, auth, mode, c)
				done(c, v, err)
			}
		}()
	}
	in := make(chan *upstream.Item, 256)
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		defer close(in)
		for i := range cands {
			c := &cands[i]
			id, err := c.cid()
			if err == nil && s.adopt(ctx, id) { // already verified and stored: resume without downloading
				v, err := s.record(ctx, ch, mode, c, id)
				done(c, v, err)
				continue
			}
			if err != nil {
				done(c, nil, err)
				continue
			}
			select {
			case in <- &upstream.Item{Request: upstream.Request{URL: c.url(ch), Authorization: auth, Restricted: ch.UpstreamRestricted}, Tag: c}:
			case <-ctx.Done():
				return
			}
		}
	}()
	err := s.up.GetMany(ctx, in, upstream.Many{
		Base:       ch.MirrorChannelUrl,
		Conns:      s.cfg.Concurrency,
		Restricted: ch.UpstreamRestricted,
		Handle: func(ctx context.Context, it *upstream.Item, body io.Reader) error {
			c := it.Tag.(*candidate)
			if err := s.put(ctx, c, body); err != nil {
				return err // the slow path tries again and names the error
			}
			id, _ := c.cid()
			v, err := s.record(ctx, ch, mode, c, id)
			done(c, v, err)
			return nil
		},
		Fallback: func(it *upstream.Item) {
			select {
			case slow <- it.Tag.(*candidate):
			case <-ctx.Done():
			}
		},
	})
	<-fed
	close(slow)
	wg.Wait()
	close(finish)
	if perr := <-published; perr != nil {
		return perr
	}
	if err != nil {
		return err
	}
	return ctx.Err()
}

// proposeChunk is the most versions one PutVersions command carries.
const proposeChunk = 2500

// propose publishes versions in commands of at most proposeChunk versions,
// proposed together: Raft then writes one to its log while its state
// machine applies the one before.
func (s *Syncer) propose(ctx context.Context, vers []*v1.PackageVersion, owner string) error {
	var g errgroup.Group
	for len(vers) > 0 {
		n := min(len(vers), proposeChunk)
		chunk := vers[:n]
		vers = vers[n:]
		g.Go(func() error {
			_, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: chunk, Force: true, OwnerId: owner}}})
			return err
		})
	}
	return g.Wait()
}

// cid checks the candidate's filename and returns its content ID.
func (c *candidate) cid() (cid.Cid, error) {
	if _, err := conda.ParseFilename(c.filename); err != nil {
		return cid.Undef, err
	}
	return store.CIDFromSHA256(c.sha256)
}

func (c *candidate) url(ch *v1.Channel) string {
	return upstream.Join(ch.MirrorChannelUrl, c.subdir+"/"+c.filename)
}

// put stores a download, verified against the upstream sha256 and size.
// Both callers have just found the blob missing.
func (s *Syncer) put(ctx context.Context, c *candidate, body io.Reader) error {
	opt := store.PutOptions{WantSHA256: c.sha256, WantSize: c.size, WantSizeSet: c.size > 0, Deferred: true, Absent: true}
	if _, err := s.blobs.Put(ctx, body, opt); err != nil {
		return fmt.Errorf("verify download: %w", err)
	}
	return nil
}

// adopt reports whether the blob id is stored, protecting it from a
// concurrent sweep until the record that references it is written.
func (s *Syncer) adopt(ctx context.Context, id cid.Cid) bool {
	_, err := s.blobs.Adopt(ctx, id)
	return err == nil
}

// fetchOne makes one verified package file available, one request at a
// time with the upstream client's retries, and returns its record.
func (s *Syncer) fetchOne(ctx context.Context, ch *v1.Channel, auth string, mode Mode, c *candidate) (*v1.PackageVersion, error) {
	id, err := c.cid()
	if err != nil {
		return nil, err
	}
	if !s.adopt(ctx, id) {
		resp, err := s.up.Get(ctx, upstream.Request{URL: c.url(ch), Authorization: auth, Restricted: ch.UpstreamRestricted})
		if err != nil {
			return nil, err
		}
		err = s.put(ctx, c, resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	return s.record(ctx, ch, mode, c, id)
}

// record returns the package record of a stored candidate: the upstream's
// (FromRepodata) or one made from the archive's info/ files (FromArchives).
func (s *Syncer) record(ctx context.Context, ch *v1.Channel, mode Mode, c *candidate, id cid.Cid) (*v1.PackageVersion, error) {
	if mode == FromRepodata {
		return c.version, nil
	}
	{
		b, err := s.blobs.Open(ctx, id)
		if err != nil {
			return nil, err
		}
		info, err := conda.ReadPackage(b, b.Info.Size, c.filename)
		b.Close()
		if err != nil {
			return nil, err
		}
		var d conda.Digests
		d.Size = b.Info.Size
		copy(d.SHA256[:], c.sha256)
		if m, err := hex.DecodeString(c.md5); err == nil && len(m) == len(d.MD5) {
			copy(d.MD5[:], m)
		}
		rec := conda.NewRecord(info, d)
		rec.Subdir = c.subdir // where the upstream serves it
		return catalog.NewPackageVersion(ch.Name, rec, conda.ChannelMeta(info), ""), nil
	}
}

// prune deletes local files of synced subdirs that the upstream no longer
// lists (or that the filters no longer select).
func (s *Syncer) prune(ctx context.Context, ch *v1.Channel, upstreamFiles map[string]map[string]bool) error {
	for sd, files := range upstreamFiles {
		local, err := s.cat.SubdirVersions(ctx, ch.Name, sd)
		if err != nil {
			return err
		}
		for _, v := range local {
			if files[v.Filename] {
				continue
			}
			if _, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_DeleteVersion{DeleteVersion: &v1.DeleteVersionOp{Channel: ch.Name, Platform: sd, Filename: v.Filename}}}); err != nil && !errors.Is(err, catalog.ErrNotFound) {
				return err
			}
			s.log.Info("pruned file removed upstream", "channel", ch.Name, "file", sd+"/"+v.Filename)
		}
	}
	return nil
}

// fail records a per-file failure that does not stop the sync: on prog
// (its count and the last one) and on the job's task (jobs.ReportError).
func (s *Syncer) fail(ctx context.Context, prog *jobs.Progress, msg string) {
	prog.Errors++
	prog.LastError = msg
	jobs.ReportError(ctx, msg)
}

func (s *Syncer) report(ctx context.Context, channel string, p jobs.Progress) {
	jobs.Report(ctx, p)
	if s.cfg.OnProgress != nil {
		s.cfg.OnProgress(channel, p)
	}
}
