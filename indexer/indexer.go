// Package indexer publishes each channel's index files: it derives
// repodata.json (+ .zst, .bz2, .gz), current_repodata.json (+ .zst, .gz),
// CEP-16 shards, channeldata.json and the index.html pages from the
// catalog's records, stores them as blobs and keeps a local pointer per
// published path. The .gz variants are computed once per rebuild, so
// Accept-Encoding: gzip is answered from stored bytes, never per request.
//
// Everything it writes is derived and local (store.LocalPrefix), so every
// node computes identical bytes (and ETags) from the same replicated records,
// and a crash at any point only means regenerating on the next start. A
// subdir is rebuilt only when its catalog generation moved; the others are
// left untouched.
//
// Local keys:
//
//	l/idx/<channel>/<path>     pointer: CID, "\n", last-modified unix seconds, and for a
//	                           shard no longer in the index, "\n" + when it was superseded
//	l/igen/<channel>/<subdir>  generation of the subdir that the pointers reflect, "/", layout
//	l/igen/<channel>//         channel generation reflected by channeldata.json and index.html, "/", layout
package indexer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"github.com/ipfs/go-cid"
	"golang.org/x/sync/errgroup"
)

// ErrNotFound is returned by File for a path that is not published.
var ErrNotFound = errors.New("indexer: not found")

// Indexer regenerates and publishes index files. Safe for concurrent use.
type Indexer struct {
	cat *catalog.Catalog
	st  *store.Store
	log *slog.Logger

	mu      sync.Mutex
	dirty   map[string]bool
	held    map[string]int // channel key -> holders (see Hold)
	wake    chan struct{}
	chLocks sync.Map // channel key -> *sync.Mutex
	builds  atomic.Uint64

	// In-memory state for the serving hot path. seq counts notifications
	// per channel; done is the seq a successful Reconcile started from. A
	// channel is fresh when ready (the start-up pass is over) and
	// seq == done. Apply notifies synchronously after committing, so a
	// client that got an answer to its write never sees a fresh-but-stale
	// channel.
	stateMu sync.Mutex
	seq     map[string]uint64
	done    map[string]uint64
	ready   atomic.Bool
	cacheMu sync.RWMutex
	cache   map[string]Published // pointer key -> published file
	cacheV  uint64               // bumped by every commit; guards late inserts
}

// SubdirBuilds counts subdir index builds since New (for tests and metrics).
func (ix *Indexer) SubdirBuilds() uint64 { return ix.builds.Load() }

// New returns an indexer; Run must be started for background regeneration.
func New(cat *catalog.Catalog, st *store.Store, logger *slog.Logger) *Indexer {
	if logger == nil {
		logger = slog.Default()
	}
	return &Indexer{
		cat: cat, st: st, log: logger.With("component", "indexer"), dirty: map[string]bool{}, held: map[string]int{}, wake: make(chan struct{}, 1),
		seq: map[string]uint64{}, done: map[string]uint64{}, cache: map[string]Published{},
	}
}

// Hold spaces the background rebuilds of a channel by maxCooldown until
// release is called, which asks for one rebuild at once. A mirror sync
// holds its channel, so that the batches it publishes do not each rebuild
// large indexes while its downloads need the CPU. Readers are never held:
// WaitFresh reconciles a stale channel itself.
func (ix *Indexer) Hold(channel string) (release func()) {
	key := catalog.ChannelKey(channel)
	ix.mu.Lock()
	ix.held[key]++
	ix.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			ix.mu.Lock()
			if ix.held[key]--; ix.held[key] <= 0 {
				delete(ix.held, key)
			}
			ix.mu.Unlock()
			ix.Notify(channel)
		})
	}
}

func (ix *Indexer) isHeld(key string) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.held[key] > 0
}

// Notify marks a channel for regeneration. It never blocks.
func (ix *Indexer) Notify(channel string) {
	key := catalog.ChannelKey(channel)
	ix.stateMu.Lock()
	ix.seq[key]++
	ix.stateMu.Unlock()
	ix.mu.Lock()
	ix.dirty[key] = true
	ix.mu.Unlock()
	select {
	case ix.wake <- struct{}{}:
	default:
	}
}

// NotifyAll marks every channel (after a snapshot restore, or at start).
func (ix *Indexer) NotifyAll(ctx context.Context) error {
	chans, err := ix.cat.Channels(ctx)
	if err != nil {
		return err
	}
	for _, ch := range chans {
		ix.Notify(ch.Name)
	}
	// Channels deleted while we were down still have pointers.
	return ix.st.Scan(ctx, []byte("l/igen/"), func(k, _ []byte) error {
		rest := strings.TrimPrefix(string(k), "l/igen/")
		if i := strings.IndexByte(rest, '/'); i > 0 {
			ix.Notify(rest[:i])
		}
		return nil
	})
}

// Run regenerates dirty channels until ctx ends. It starts by reconciling
// every channel, which repairs whatever a crash interrupted.
func (ix *Indexer) Run(ctx context.Context) error {
	if err := ix.NotifyAll(ctx); err != nil {
		return err
	}
	first := true
	// A channel that keeps changing (a long mirror sync publishing batch
	// after batch) is rebuilt at most once per cooldown after its last
	// rebuild, so rebuilding takes at most a fifth of the time and leaves
	// the CPU to the work producing the changes. Readers never wait for the
	// cooldown: WaitFresh reconciles a stale channel itself.
	notBefore := map[string]time.Time{} // channel -> earliest next rebuild
	builtAt := map[string]time.Time{}   // channel -> end of its last rebuild here
	// due is when a channel may be rebuilt: after its cooldown, and a
	// held channel maxCooldown after its last rebuild.
	due := func(ch string) time.Time {
		nb := notBefore[ch]
		if at, ok := builtAt[ch]; ok && ix.isHeld(ch) && at.Add(maxCooldown).After(nb) {
			nb = at.Add(maxCooldown)
		}
		return nb
	}
	deferred := map[string]bool{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ix.wake:
		case <-timer.C:
		}
		ix.mu.Lock()
		batch := ix.dirty
		ix.dirty = map[string]bool{}
		ix.mu.Unlock()
		for ch := range deferred {
			batch[ch] = true
		}
		clear(deferred)
		names := make([]string, 0, len(batch))
		for ch := range batch {
			names = append(names, ch)
		}
		sort.Strings(names)
		now := time.Now()
		for _, ch := range names {
			if now.Before(due(ch)) {
				deferred[ch] = true
				continue
			}
			start := time.Now()
			if err := ix.Reconcile(ctx, ch); err != nil && ctx.Err() == nil {
				ix.log.Error("regenerate channel indexes", "channel", ch, "err", err)
			}
			end := time.Now()
			notBefore[ch] = end.Add(min(4*end.Sub(start), maxCooldown))
			builtAt[ch] = end
		}
		for ch, nb := range notBefore {
			if now.After(nb) && !deferred[ch] {
				delete(notBefore, ch) // keep the maps to the channels still changing
			}
		}
		for ch, at := range builtAt {
			if now.Sub(at) > maxCooldown && !deferred[ch] {
				delete(builtAt, ch)
			}
		}
		var next time.Time
		for ch := range deferred {
			if nb := due(ch); next.IsZero() || nb.Before(next) {
				next = nb
			}
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		if first {
			first = false
			ix.ready.Store(true)
		}
	}
}

// maxCooldown bounds how long a changing channel's rebuild is put off.
const maxCooldown = 30 * time.Second

func (ix *Indexer) lock(ch string) func() {
	m, _ := ix.chLocks.LoadOrStore(catalog.ChannelKey(ch), &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

func pointerKey(ch, path string) []byte {
	return []byte("l/idx/" + catalog.ChannelKey(ch) + "/" + path)
}
func igenKey(ch, subdir string) []byte {
	return []byte("l/igen/" + catalog.ChannelKey(ch) + "/" + subdir)
}

// layout names the set of files a rebuild publishes. It is stored with each
// generation mark, so a node whose build publishes more files (layout 2
// added the .gz variants) rebuilds every subdir once after an upgrade
// instead of waiting for the next change.
const layout = "2"

// igenValue is the generation mark of published files.
func igenValue(gen uint64) []byte { return []byte(strconv.FormatUint(gen, 10) + "/" + layout) }

// Published is a published index file.
type Published struct {
	CID     cid.Cid
	ModTime time.Time
}

// File returns the published file at path ("repodata.json",
// "linux-64/repodata.json.zst", "noarch/shards/<hex>.msgpack.zst", ...).
func (ix *Indexer) File(ctx context.Context, ch, path string) (Published, error) {
	key := pointerKey(ch, path)
	ix.cacheMu.RLock()
	p, ok := ix.cache[string(key)]
	version := ix.cacheV
	ix.cacheMu.RUnlock()
	if ok {
		return p, nil
	}
	v, err := ix.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return Published{}, ErrNotFound
	}
	if err != nil {
		return Published{}, err
	}
	fields := strings.Split(string(v), "\n")
	id, err := cid.Decode(fields[0])
	if err != nil || len(fields) < 2 {
		return Published{}, fmt.Errorf("indexer: corrupt pointer for %s/%s", ch, path)
	}
	secs, _ := strconv.ParseInt(fields[1], 10, 64)
	p = Published{CID: id, ModTime: time.Unix(secs, 0).UTC()}
	ix.cacheMu.Lock()
	if ix.cacheV == version { // no commit since the read: the value is current
		ix.cache[string(key)] = p
	}
	ix.cacheMu.Unlock()
	return p, nil
}

// commit applies pointer writes atomically, then mirrors them in the cache.
// The cache lock is held across the write, so no reader can pair the new
// generation (fresh) with a cached old location.
func (ix *Indexer) commit(ctx context.Context, writes []store.LocalWrite) error {
	ix.cacheMu.Lock()
	defer ix.cacheMu.Unlock()
	ix.cacheV++
	for _, w := range writes {
		delete(ix.cache, string(w.Key))
	}
	return ix.st.WriteLocal(ctx, writes)
}

// Fresh reports whether the published files of subdir (or, with subdir "",
// of the channel root) reflect the catalog's current generation.
func (ix *Indexer) Fresh(ctx context.Context, ch, subdir string) (bool, error) {
	if ix.ready.Load() {
		key := catalog.ChannelKey(ch)
		ix.stateMu.Lock()
		clean := ix.seq[key] == ix.done[key]
		ix.stateMu.Unlock()
		if clean {
			return true, nil
		}
	}
	return ix.freshStored(ctx, ch, subdir)
}

// freshStored compares the stored generations (the slow, authoritative path).
func (ix *Indexer) freshStored(ctx context.Context, ch, subdir string) (bool, error) {
	var want uint64
	var err error
	if subdir == "" {
		want, err = ix.cat.ChannelGeneration(ctx, ch)
	} else {
		want, err = ix.cat.Generation(ctx, ch, subdir)
	}
	if err != nil {
		return false, err
	}
	have, err := ix.st.Get(ctx, igenKey(ch, subdir))
	if errors.Is(err, store.ErrNotFound) {
		return want == 0 && subdir != "noarch" && subdir != "", nil
	}
	if err != nil {
		return false, err
	}
	return string(have) == string(igenValue(want)), nil
}

// WaitFresh returns once the published files of the channel reflect the
// catalog, reconciling the channel itself if needed (under the channel's
// lock, so concurrent waiters and Run share one rebuild), or when ctx ends.
// A client that just uploaded a package then sees it in the next repodata
// it fetches, however long Run's queue of other channels is.
func (ix *Indexer) WaitFresh(ctx context.Context, ch, subdir string) error {
	for attempt := 0; ; attempt++ {
		ok, err := ix.Fresh(ctx, ch, subdir)
		if err != nil || ok {
			return err
		}
		if attempt > 0 {
			// Still not fresh: a change landed meanwhile. Let it settle a
			// moment rather than spin.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
		if err := ix.Reconcile(ctx, ch); err != nil {
			return err
		}
	}
}

// Reconcile brings one channel's published files up to date now.
func (ix *Indexer) Reconcile(ctx context.Context, chName string) error {
	defer ix.lock(chName)()
	key := catalog.ChannelKey(chName)
	ix.stateMu.Lock()
	startSeq := ix.seq[key]
	ix.stateMu.Unlock()
	if err := ix.reconcile(ctx, chName); err != nil {
		return err
	}
	ix.stateMu.Lock()
	ix.done[key] = max(ix.done[key], startSeq)
	ix.stateMu.Unlock()
	return nil
}

func (ix *Indexer) reconcile(ctx context.Context, chName string) error {
	ch, err := ix.cat.Channel(ctx, chName)
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && ch.MirrorMode == "proxy") {
		return ix.unpublish(ctx, chName)
	}
	if err != nil {
		return err
	}
	// Read the channel generation before any record: what is published is
	// then at least as new as the generation it is marked with.
	chGen, err := ix.cat.ChannelGeneration(ctx, ch.Name)
	if err != nil {
		return err
	}
	subdirs, err := ix.cat.Subdirs(ctx, ch.Name)
	if err != nil {
		return err
	}
	byDir := map[string][]conda.Record{}
	about := map[string]map[string]any{}
	changedAny := false
	for _, sd := range subdirs {
		gen, err := ix.cat.Generation(ctx, ch.Name, sd)
		if err != nil {
			return err
		}
		vers, err := ix.cat.SubdirVersions(ctx, ch.Name, sd)
		if err != nil {
			return err
		}
		recs, err := records(vers, about)
		if err != nil {
			return err
		}
		byDir[sd] = recs
		fresh, err := ix.freshStored(ctx, ch.Name, sd)
		if err != nil {
			return err
		}
		if fresh {
			continue
		}
		changedAny = true
		ix.builds.Add(1)
		start := time.Now()
		if err := ix.publishSubdir(ctx, ch, sd, gen, vers, recs); err != nil {
			return fmt.Errorf("subdir %s: %w", sd, err)
		}
		ix.log.Info("published subdir indexes", "channel", ch.Name, "subdir", sd, "records", len(recs), "generation", gen, "took", time.Since(start))
	}
	if fresh, err := ix.freshStored(ctx, ch.Name, ""); err != nil || (fresh && !changedAny) {
		return err
	}
	return ix.publishChannel(ctx, ch, chGen, subdirs, byDir, about)
}

func records(vers []*v1.PackageVersion, about map[string]map[string]any) ([]conda.Record, error) {
	recs := make([]conda.Record, 0, len(vers))
	for _, v := range vers {
		f, err := conda.DecodeRecordFields(v.RecordJson)
		if err != nil {
			return nil, fmt.Errorf("record %s/%s: %w", v.Platform, v.Filename, err)
		}
		recs = append(recs, conda.Record{Filename: v.Filename, Subdir: v.Platform, Fields: f})
		if len(v.AboutJson) > 0 {
			if m, err := conda.DecodeRecordFields(v.AboutJson); err == nil {
				about[v.Filename] = m
			}
		}
	}
	return recs, nil
}

type file struct {
	path string
	data []byte
}

func (ix *Indexer) publishSubdir(ctx context.Context, ch *v1.Channel, sd string, gen uint64, vers []*v1.PackageVersion, recs []conda.Record) error {
	// The variants are independent: build them in parallel (bzip2 and the
	// shards dominate on large subdirs).
	rd := conda.Repodata(sd, recs)
	var cur, rdZst, rdBz2, rdGz, curZst, curGz, shardIndex []byte
	var shards map[string][]byte
	var g errgroup.Group
	g.Go(func() error { rdZst = conda.Zstd(rd); return nil })
	g.Go(func() error { rdBz2 = conda.Bzip2(rd); return nil })
	g.Go(func() error { rdGz = conda.Gzip(rd); return nil })
	g.Go(func() error {
		cur = conda.CurrentRepodata(sd, recs)
		curZst, curGz = conda.Zstd(cur), conda.Gzip(cur)
		return nil
	})
	g.Go(func() (err error) { shardIndex, shards, err = conda.Shards(sd, recs); return err })
	if err := g.Wait(); err != nil {
		return err
	}
	files := []file{
		{sd + "/repodata.json", rd},
		{sd + "/repodata.json.zst", rdZst},
		{sd + "/repodata.json.bz2", rdBz2},
		{sd + "/repodata.json.gz", rdGz},
		{sd + "/current_repodata.json", cur},
		{sd + "/current_repodata.json.zst", curZst},
		{sd + "/current_repodata.json.gz", curGz},
		{sd + "/repodata_shards.msgpack.zst", shardIndex},
	}
	hexes := make([]string, 0, len(shards))
	for h := range shards {
		hexes = append(hexes, h)
	}
	sort.Strings(hexes)
	// Shards first, the shard index after them (CEP-16: never publish an
	// index naming a shard that does not exist yet). All pointers of the
	// subdir switch in one batch anyway.
	var shardFiles []file
	for _, h := range hexes {
		shardFiles = append(shardFiles, file{sd + "/shards/" + h + ".msgpack.zst", shards[h]})
	}
	entries := make([]conda.FileEntry, 0, len(files)+len(vers))
	var mod int64 = ch.CreatedUnix
	for _, v := range vers {
		mod = max(mod, v.ModifiedUnix)
	}
	for _, f := range files {
		entries = append(entries, conda.FileEntry{Name: strings.TrimPrefix(f.path, sd+"/"), Size: int64(len(f.data))})
	}
	for _, v := range vers {
		entries = append(entries, conda.FileEntry{Name: v.Filename, Size: v.Size, SHA256: v.Sha256})
	}
	files = append(files, file{sd + "/index.html", conda.SubdirIndexHTML(ch.Name, sd, entries)})
	all := append(shardFiles, files...)
	writes, err := ix.putFiles(ctx, ch.Name, all, mod)
	if err != nil {
		return err
	}
	retired, err := ix.retireShards(ctx, ch.Name, sd, shardFiles)
	if err != nil {
		return err
	}
	writes = append(writes, retired...)
	writes = append(writes, store.LocalWrite{Key: igenKey(ch.Name, sd), Value: igenValue(gen)})
	return ix.commit(ctx, writes)
}

// ShardKeep is how long a shard stays served after a rebuild stopped
// naming it (conda.ShardKeep). Then its pointer goes and the sweep
// reclaims the blob.
const ShardKeep = conda.ShardKeep

// retireShards marks the subdir's shards that the new index no longer
// names with the time they were superseded (a third pointer field), and
// drops those superseded more than ShardKeep ago.
func (ix *Indexer) retireShards(ctx context.Context, ch, sd string, current []file) ([]store.LocalWrite, error) {
	keep := make(map[string]bool, len(current))
	for _, f := range current {
		keep[string(pointerKey(ch, f.path))] = true
	}
	now := time.Now().Unix()
	var writes []store.LocalWrite
	err := ix.st.Scan(ctx, pointerKey(ch, sd+"/shards/"), func(k, v []byte) error {
		if keep[string(k)] {
			return nil
		}
		fields := strings.Split(string(v), "\n")
		switch {
		case len(fields) == 2:
			writes = append(writes, store.LocalWrite{Key: bytes.Clone(k), Value: []byte(string(v) + "\n" + strconv.FormatInt(now, 10))})
		case len(fields) == 3:
			if at, _ := strconv.ParseInt(fields[2], 10, 64); now-at > int64(ShardKeep/time.Second) {
				writes = append(writes, store.LocalWrite{Key: bytes.Clone(k)})
			}
		}
		return nil
	})
	return writes, err
}

func (ix *Indexer) publishChannel(ctx context.Context, ch *v1.Channel, gen uint64, subdirs []string, byDir map[string][]conda.Record, about map[string]map[string]any) error {
	var mod int64 = ch.CreatedUnix
	for _, recs := range byDir {
		for _, r := range recs {
			mod = max(mod, r.Timestamp()/1000)
		}
	}
	files := []file{
		{"channeldata.json", conda.ChannelData(subdirs, byDir, about)},
		{"index.html", conda.ChannelIndexHTML(ch.Name, subdirs, conda.PackageSummaries(byDir, about))},
	}
	writes, err := ix.putFiles(ctx, ch.Name, files, mod)
	if err != nil {
		return err
	}
	writes = append(writes, store.LocalWrite{Key: igenKey(ch.Name, ""), Value: igenValue(gen)})
	return ix.commit(ctx, writes)
}

func (ix *Indexer) putFiles(ctx context.Context, ch string, files []file, mod int64) ([]store.LocalWrite, error) {
	writes := make([]store.LocalWrite, 0, len(files)+1)
	for _, f := range files {
		// Deferred: one WAL sync below for the whole rebuild instead of one
		// per blob, before any pointer names them. (A Put of bytes that are
		// already stored only re-verifies them, which also shields them
		// from a concurrent sweep.)
		info, err := ix.st.Put(ctx, bytes.NewReader(f.data), store.PutOptions{Deferred: true})
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", f.path, err)
		}
		writes = append(writes, store.LocalWrite{Key: pointerKey(ch, f.path), Value: []byte(info.CID.String() + "\n" + strconv.FormatInt(mod, 10))})
	}
	if err := ix.st.Sync(ctx); err != nil {
		return nil, err
	}
	return writes, nil
}

// unpublish removes every pointer of a deleted (or proxy) channel.
func (ix *Indexer) unpublish(ctx context.Context, ch string) error {
	var writes []store.LocalWrite
	for _, p := range []string{"l/idx/" + catalog.ChannelKey(ch) + "/", "l/igen/" + catalog.ChannelKey(ch) + "/"} {
		err := ix.st.Scan(ctx, []byte(p), func(k, _ []byte) error {
			writes = append(writes, store.LocalWrite{Key: append([]byte(nil), k...)})
			return nil
		})
		if err != nil {
			return err
		}
	}
	if len(writes) == 0 {
		return nil
	}
	return ix.commit(ctx, writes)
}

// EachPublished calls fn with the CID of every published index file (of
// every channel): the blobs the indexer references.
func (ix *Indexer) EachPublished(ctx context.Context, fn func(cid.Cid) error) error {
	return ix.st.Scan(ctx, []byte("l/idx/"), func(_, v []byte) error {
		c, _, _ := strings.Cut(string(v), "\n")
		id, err := cid.Decode(c)
		if err != nil {
			return fmt.Errorf("indexer: corrupt pointer: %w", err)
		}
		return fn(id)
	})
}
