package proxy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
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
)

// Derived sets. When the upstream publishes no repodata.json.zst, shards
// or current_repodata.json for a subdir, the proxy derives them from its
// copy of the subdir's repodata.json: a derived set. A set is node-local
// (every node derives the same bytes from the same source blob, so no
// entry is replicated for it) and complete: a set is published (one local
// write) only once every file of it is stored, and the previous set keeps
// being served until then, so a client never gets a shard index whose
// shards are missing, nor waits while a new set is built.
//
// A derivation reads the source once, record by record
// (conda.ScanRepodataReader): each record's shard entry is encoded and
// appended to a scratch file, and only the latest records per name (for
// current_repodata.json) stay in memory. Then each name's shard is
// assembled from the scratch file; a name whose shard content did not
// change since the previous set keeps its shard file without compressing
// anything. The whole-file repodata.json.zst is compressed meanwhile on
// another goroutine.
//
// Local key:
//
//	l/pxd/<channel key>/<subdir>   the subdir's current set (encodeSet)

// Files of a set, relative to its subdir. The gzip and bzip2 forms of
// repodata.json are not part of it: they are derived after the set is
// published, on request (lazyVariants).
const (
	fileZst          = "repodata.json.zst"
	fileCurrent      = "current_repodata.json"
	fileCurrentZst   = "current_repodata.json.zst"
	fileCurrentGz    = "current_repodata.json.gz"
	fileCurrentBz2   = "current_repodata.json.bz2"
	fileShardIndex   = "repodata_shards.msgpack.zst"
	fileRepodataGz   = "repodata.json.gz"
	fileRepodataBz2  = "repodata.json.bz2"
	shardsDir        = "shards/"
	shardSuffix      = ".msgpack.zst"
	derivedKeyPrefix = "l/pxd/"
)

// lazyVariant is a file derived from a published set on first request:
// from its source (from "") or from another of its files.
type lazyVariant struct {
	from     string
	compress func(io.Writer, io.Reader) error
}

var lazyVariants = map[string]lazyVariant{
	// The whole-file .zst is made right after its set is published (not
	// beside the scan, whose two cores get the shard index out sooner);
	// a request meanwhile gets it streamed (streamZst).
	fileZst:         {"", func(w io.Writer, r io.Reader) error { return conda.ZstdStreamLevel(w, r, conda.WholeZstd) }},
	fileRepodataGz:  {"", conda.GzipStream},
	fileRepodataBz2: {"", conda.Bzip2Stream},
	fileCurrentBz2:  {fileCurrent, conda.Bzip2Stream},
	// Gzip at its default level takes about a second on a
	// conda-forge-sized current_repodata.json: not on a change's way.
	fileCurrentGz: {fileCurrent, conda.GzipStream},
}

// isDerivedFile tells whether file (relative to a subdir) is one the
// proxy derives when the upstream does not publish it.
func isDerivedFile(file string) bool {
	switch file {
	case fileZst, fileCurrent, fileCurrentZst, fileCurrentGz, fileCurrentBz2, fileShardIndex, fileRepodataGz, fileRepodataBz2:
		return true
	}
	_, ok := shardSum(file)
	return ok
}

// shardSum parses "shards/<64 hex>.msgpack.zst".
func shardSum(file string) ([32]byte, bool) {
	var sum [32]byte
	h, ok := strings.CutPrefix(file, shardsDir)
	if !ok {
		return sum, false
	}
	h, ok = strings.CutSuffix(h, shardSuffix)
	if !ok || len(h) != 64 {
		return sum, false
	}
	if _, err := hex.Decode(sum[:], []byte(h)); err != nil {
		return sum, false
	}
	return sum, true
}

// nameShard is a package name's shard in a set.
type nameShard struct {
	// entries is the SHA-256 of the name's shard entries in the order the
	// scan met them: equal to the previous set's, the shard is unchanged
	// and not even assembled again.
	entries [32]byte
	shard   [32]byte // SHA-256 of the shard file: its name and blob
	// raw is the digest of the name's records as the index writes them
	// (conda.NameDigest): equal to a new index's, nothing of the name
	// changed, and a derivation after a small change need not transcode
	// them (diffscan.go).
	raw [32]byte
}

// derivedSet is a subdir's published derived files. Once published it is
// never changed (a new one replaces it), so readers share it unlocked.
type derivedSet struct {
	src     cid.Cid
	tag     string             // setTag of the channel it was derived for
	built   int64              // unix seconds: Last-Modified of its files
	files   map[string]cid.Cid // file -> blob (lazy variants added by copy)
	names   map[string]nameShard
	hasRaw  bool               // names carry their raw digests (sets written before them do not)
	shards  map[[32]byte]bool  // current shard files
	retired map[[32]byte]int64 // earlier shard files -> when superseded
}

// setTag names a channel's incarnation and upstream: a set derived for a
// channel that was since deleted and created again (even within the same
// second, perhaps by another user with other upstream credentials or
// confined fetches), or whose upstream URL changed, is not served. Channels
// created before created_index existed are told apart by their creation
// second only (their tags, and so their sets, stay valid).
func setTag(ch *v1.Channel) string {
	b := fmt.Appendf(nil, "%d\x00%s", ch.CreatedUnix, ch.MirrorChannelUrl)
	if ch.CreatedIndex != 0 {
		b = fmt.Appendf(b, "\x00%d", ch.CreatedIndex)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// errEarlierIncarnation ends a derivation whose channel was deleted,
// created again or moved to another upstream while it ran: its set is not
// published.
var errEarlierIncarnation = errors.New("proxy: the channel changed while its index files were derived")

// isCurrent reports whether ch is the channel as the catalog has it now
// (same incarnation and upstream): work that began before a channel was
// deleted, created again or moved to another upstream still holds the
// earlier record, and must not derive for it.
func (p *Proxy) isCurrent(ctx context.Context, ch *v1.Channel) bool {
	now, err := p.cat.ChannelView(ctx, ch.Name)
	if err != nil {
		return !errors.Is(err, catalog.ErrNotFound) // unsure: let it run
	}
	return setTag(now) == setTag(ch)
}

func derivedKey(ch, subdir string) []byte {
	return []byte(derivedKeyPrefix + catalog.ChannelKey(ch) + "/" + subdir)
}

// has reports whether the set serves shard sum (current, or superseded
// less than conda.ShardKeep ago).
func (s *derivedSet) has(sum [32]byte) bool {
	return s.shards[sum] || s.retired[sum] != 0
}

// encodeSet writes a set as: "pxd2", the source CID, built, then counted
// lists of files (name, CID), names (name, entries digest, shard, raw
// digest) and retired shards (shard, time); strings and CIDs
// length-prefixed, numbers as varints. ("pxd1", of earlier versions, has
// no raw digests.)
func encodeSet(s *derivedSet) []byte {
	b := []byte("pxd2")
	str := func(v string) { b = binary.AppendUvarint(b, uint64(len(v))); b = append(b, v...) }
	str(string(s.src.Bytes()))
	str(s.tag)
	b = binary.AppendUvarint(b, uint64(max(s.built, 0)))
	b = binary.AppendUvarint(b, uint64(len(s.files)))
	for _, f := range sortedKeys(s.files) {
		str(f)
		str(string(s.files[f].Bytes()))
	}
	b = binary.AppendUvarint(b, uint64(len(s.names)))
	for _, n := range sortedKeys(s.names) {
		str(n)
		ns := s.names[n]
		b = append(b, ns.entries[:]...)
		b = append(b, ns.shard[:]...)
		b = append(b, ns.raw[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(s.retired)))
	retired := make([][32]byte, 0, len(s.retired))
	for sum := range s.retired {
		retired = append(retired, sum)
	}
	slices.SortFunc(retired, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	for _, sum := range retired {
		b = append(b, sum[:]...)
		b = binary.AppendUvarint(b, uint64(max(s.retired[sum], 0)))
	}
	return b
}

var errCorruptSet = errors.New("proxy: corrupt derived set")

// decodeSet reads what encodeSet wrote.
func decodeSet(b []byte) (*derivedSet, error) {
	rest, ok := bytes.CutPrefix(b, []byte("pxd2"))
	hasRaw := ok
	if !ok {
		if rest, ok = bytes.CutPrefix(b, []byte("pxd1")); !ok {
			return nil, errCorruptSet
		}
	}
	fail := false
	uv := func() uint64 {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			fail = true
			return 0
		}
		rest = rest[n:]
		return v
	}
	sv := func() int64 { return int64(uv()) } // times: unix seconds, written unsigned
	raw := func(n uint64) []byte {
		if fail || n > uint64(len(rest)) {
			fail = true
			return nil
		}
		v := rest[:n]
		rest = rest[n:]
		return v
	}
	str := func() string { return string(raw(uv())) }
	sum := func() (s [32]byte) { copy(s[:], raw(32)); return s }
	count := func(min uint64) int { // bounded by what is left
		n := uv()
		if fail || n > uint64(len(rest))/min {
			fail = true
			return 0
		}
		return int(n)
	}
	s := &derivedSet{files: map[string]cid.Cid{}, names: map[string]nameShard{}, shards: map[[32]byte]bool{}, retired: map[[32]byte]int64{}}
	src, err := cid.Cast([]byte(str()))
	if err != nil {
		return nil, errCorruptSet
	}
	s.src = src
	s.tag = str()
	s.built = sv()
	for range count(2) {
		f := str()
		c, err := cid.Cast([]byte(str()))
		if err != nil {
			return nil, errCorruptSet
		}
		s.files[f] = c
	}
	s.hasRaw = hasRaw
	nameSize := uint64(65)
	if hasRaw {
		nameSize += 32
	}
	for range count(nameSize) {
		n := str()
		ns := nameShard{entries: sum(), shard: sum()}
		if hasRaw {
			ns.raw = sum()
		}
		s.names[n] = ns
		s.shards[ns.shard] = true
	}
	for range count(33) {
		k := sum()
		s.retired[k] = sv()
	}
	if fail || len(rest) != 0 {
		return nil, errCorruptSet
	}
	return s, nil
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// currentSet returns the published set of subdir, or nil.
func (p *Proxy) currentSet(ctx context.Context, chn *v1.Channel, subdir string) (*derivedSet, error) {
	ch, tag := chn.Name, setTag(chn)
	k := key(ch, subdir)
	p.setsMu.Lock()
	s, ok := p.setCache[k]
	p.setsMu.Unlock()
	if ok {
		if s.tag != tag {
			return nil, nil
		}
		return s, nil
	}
	v, err := p.blobs.Get(ctx, derivedKey(ch, subdir))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if s, err = decodeSet(v); err != nil {
		p.log.Warn("derived set unreadable: deriving it again", "channel", ch, "subdir", subdir, "err", err)
		return nil, nil
	}
	p.setsMu.Lock()
	if cur, ok := p.setCache[k]; ok {
		s = cur // published meanwhile
	} else {
		p.setCache[k] = s
	}
	p.setsMu.Unlock()
	if s.tag != tag {
		return nil, nil
	}
	return s, nil
}

// publishSet makes s the subdir's set: one synced local write, after every
// blob it names is durable.
func (p *Proxy) publishSet(ctx context.Context, ch, subdir string, s *derivedSet) error {
	if err := p.blobs.Sync(ctx); err != nil {
		return err
	}
	p.setsMu.Lock()
	defer p.setsMu.Unlock()
	return p.publishLocked(ctx, ch, subdir, s)
}

// publishLocked is publishSet's write, under setsMu, after the sync.
func (p *Proxy) publishLocked(ctx context.Context, ch, subdir string, s *derivedSet) error {
	if err := p.blobs.WriteLocal(ctx, []store.LocalWrite{{Key: derivedKey(ch, subdir), Value: encodeSet(s)}}); err != nil {
		return err
	}
	p.setCache[key(ch, subdir)] = s
	return nil
}

// EachDerived calls fn with every blob a published set names (its files,
// current shards and the superseded shards it still serves): the blobs the
// proxy's derived files reference, for the sweep. The set of a channel
// that is gone (or was created again since) names nothing and is removed.
func (p *Proxy) EachDerived(ctx context.Context, fn func(cid.Cid) error) error {
	var gone []store.LocalWrite
	err := p.blobs.Scan(ctx, []byte(derivedKeyPrefix), func(k, v []byte) error {
		s, err := decodeSet(v)
		if err != nil {
			return nil // re-derived on its next use; nothing to keep
		}
		chKey, _, _ := strings.Cut(strings.TrimPrefix(string(k), derivedKeyPrefix), "/")
		if ch, err := p.cat.ChannelView(ctx, chKey); errors.Is(err, catalog.ErrNotFound) || (err == nil && setTag(ch) != s.tag) {
			gone = append(gone, store.LocalWrite{Key: bytes.Clone(k)})
			return nil
		} else if err != nil {
			return err
		}
		if err := fn(s.src); err != nil { // served while a newer copy is derived
			return err
		}
		for _, c := range s.files {
			if err := fn(c); err != nil {
				return err
			}
		}
		for sum := range s.shards {
			if err := fn(shardCID(sum)); err != nil {
				return err
			}
		}
		for sum := range s.retired {
			if err := fn(shardCID(sum)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || len(gone) == 0 {
		return err
	}
	p.setsMu.Lock()
	defer p.setsMu.Unlock()
	for _, w := range gone {
		k := strings.TrimPrefix(string(w.Key), derivedKeyPrefix)
		delete(p.setCache, k)
		delete(p.currents, k)
	}
	return p.blobs.WriteLocal(ctx, gone)
}

func shardCID(sum [32]byte) cid.Cid {
	c, _ := store.CIDFromSHA256(sum[:]) // 32 bytes: cannot fail
	return c
}

// Derivations counts derived sets built, and ShardsBuilt the shard files
// compressed for them, since New (tests and metrics).
func (p *Proxy) Derivations() uint64 { return p.derivations.Load() }

// LiveLookups counts the package records found in a derivation still
// running (liveLookup).
func (p *Proxy) LiveLookups() uint64 { return p.liveLookups.Load() }

// RecordsTranscoded counts the records derivations transcoded: every
// record of a full scan, those of the changed names after a small change
// (diffscan.go).
func (p *Proxy) RecordsTranscoded() uint64 { return p.transcoded.Load() }

// CurrentNamesEncoded counts the package names whose part of a
// current_repodata.json was encoded (not kept from the subdir's previous
// derivation).
func (p *Proxy) CurrentNamesEncoded() uint64 { return p.currentEncoded.Load() }

// ShardsBuilt: see Derivations.
func (p *Proxy) ShardsBuilt() uint64 { return p.shardsBuilt.Load() }

// ensureSet returns the subdir's set for the source blob src, deriving it
// (once however many ask) if the published one is older. With wait unset,
// an older published set is returned at once (the new one is derived in
// the background); with no set at all, or with wait, it waits.
func (p *Proxy) ensureSet(ctx context.Context, ch *v1.Channel, subdir string, src cid.Cid, wait bool) (*derivedSet, error) {
	cur, err := p.currentSet(ctx, ch, subdir)
	if err != nil {
		return nil, err
	}
	if cur != nil && cur.src.Equals(src) {
		return cur, nil
	}
	d := p.deriveAsync(ch, subdir, src)
	if cur != nil && !wait {
		return cur, nil
	}
	k := "derive\x00" + key(ch.Name, subdir)
	followed := false
	for {
		select {
		case <-d.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		s, err := p.currentSet(ctx, ch, subdir)
		if err != nil {
			return nil, err
		}
		if s != nil && (s.src.Equals(src) || followed) {
			return s, nil
		}
		p.mu.Lock()
		next, f := p.deriving[k], p.failures[k]
		p.mu.Unlock()
		if next != nil && next != d && !next.src.Equals(d.src) {
			// A newer index is being derived (this one may have stopped
			// for it): its set answers.
			d, followed = next, true
			continue
		}
		if f.err != nil {
			return nil, f.err
		}
		return nil, fmt.Errorf("%w: %s/%s: the derivation of its index files did not finish", upstream.ErrUnavailable, ch.Name, subdir)
	}
}

// deriveAsync starts the derivation of subdir's set from src unless it
// runs already; its done channel closes when it ends.
func (p *Proxy) deriveAsync(ch *v1.Channel, subdir string, src cid.Cid) *derivation {
	k := "derive\x00" + key(ch.Name, subdir)
	tag := setTag(ch)
	cur, _ := p.currentSet(p.bg, ch, subdir)
	current := p.isCurrent(p.bg, ch)
	p.mu.Lock()
	defer p.mu.Unlock()
	if d, ok := p.deriving[k]; ok && d.src.Equals(src) && d.tag == tag {
		return d
	}
	d := &derivation{src: src, tag: tag, done: make(chan struct{}), live: newLiveLookup()}
	if p.bg.Err() != nil || !current { // closed, or ch is an earlier incarnation
		close(d.done)
		d.live.end()
		return d
	}
	if ps := p.prescans[key(ch.Name, subdir)]; ps != nil && ps.src.Equals(src) {
		d.live = ps.live // its scan runs already: look-ups are answered from it
	}
	dctx, cancel := context.WithCancel(p.bg)
	d.cancel = cancel
	if prev, ok := p.deriving[k]; ok {
		// Another source is being derived: this one follows it. With no
		// set published yet, the newest upstream index is what is served
		// (servedIndex) and what package records come from: the older
		// derivation would publish a set older than both, so it stops. A
		// derivation for an earlier incarnation of the channel stops too.
		d.after = prev.done
		if cur == nil || prev.tag != tag {
			prev.cancel()
		}
	}
	p.deriving[k] = d
	p.bgWG.Add(1)
	go func() {
		defer p.bgWG.Done()
		defer close(d.done)
		if d.after != nil {
			<-d.after
		}
		defer cancel()
		ctx, stop := context.WithTimeout(dctx, p.cfg.DeriveTimeout)
		defer stop()
		err := p.derive(ctx, ch, subdir, src, d.live)
		p.mu.Lock()
		superseded := p.deriving[k] != d
		if !superseded {
			delete(p.deriving, k)
		}
		switch {
		case err == nil:
			delete(p.failures, k)
		case superseded && dctx.Err() != nil, errors.Is(err, errEarlierIncarnation):
			err = nil // stopped for the newer one (see above), or not wanted
		default:
			p.failures[k] = failure{err: err, at: p.cfg.Now()}
		}
		p.mu.Unlock()
		if err != nil {
			p.log.Warn("derive index files", "channel", ch.Name, "subdir", subdir, "err", err)
		}
	}()
	return d
}

// derivation is one running derivation of a subdir's set.
type derivation struct {
	src    cid.Cid
	tag    string // setTag of the channel it derives for
	done   chan struct{}
	after  <-chan struct{}
	live   *liveLookup
	cancel context.CancelFunc
}

// scannedName is what the scan saw of one package name: where its shard
// entries are in the scratch file, and their digest (nameShard.entries).
type scannedName struct {
	refs []shardRef
	sum  hash.Hash
	raw  *conda.NameDigest // of the records' JSON (PairRecord.JSONSum)
}

// shardRef is where a record's shard entry sits in the scratch file.
type shardRef struct {
	off   int64
	n     uint32
	conda bool
}

// derive builds, stores and publishes subdir's set from the repodata.json
// blob src.
func (p *Proxy) derive(ctx context.Context, ch *v1.Channel, subdir string, src cid.Cid, live *liveLookup) error {
	defer live.end()
	defer func() { // a scan of the download (prescan.go) this derivation did not take
		if ps := p.takePrescan(ch, subdir, src); ps != nil {
			ps.discard(errPrescanUnused)
		}
	}()
	prev, err := p.currentSet(ctx, ch, subdir)
	if err != nil {
		return err
	}
	if prev != nil && prev.src.Equals(src) {
		return nil
	}
	release, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	if p.deriveHook != nil {
		p.deriveHook()
	}
	start := time.Now()
	now := p.cfg.Now()
	// The files' Last-Modified is the source's (replicated), so that every
	// node answers the same.
	modified := now.Unix()
	if e, err := p.cat.ProxyEntry(ctx, ch.Name, subdir+"/repodata.json"); err == nil && e.Cid == src.String() {
		modified = modTime(e).Unix()
	}
	next := &derivedSet{src: src, tag: setTag(ch), built: modified, files: map[string]cid.Cid{}, names: map[string]nameShard{}, shards: map[[32]byte]bool{}, retired: map[[32]byte]int64{}}

	// The subdir's current_repodata.json cache, and the document of prev
	// it holds the parts of: with both, and prev's raw digests, only the
	// names that changed are transcoded (diffscan.go).
	k := key(ch.Name, subdir)
	cache := p.takeCurrentCache(k)
	defer func() { p.putCurrentCache(k, cache) }()
	var prevDoc []byte
	if prev != nil && cache.Warm() {
		prevDoc, _ = p.blobs.ReadAll(ctx, prev.files[fileCurrent]) // gone: every name is encoded
	}
	diff := prev != nil && prev.hasRaw && cache.Holds(prevDoc)

	var (
		sc      *store.Scratch
		byName  map[string]*scannedName
		raws    map[string]*rawName // a raw scan's (diff)
		latest  conda.Latest
		records int
		mode    = "full"
	)
	ps := p.takePrescan(ch, subdir, src)
	if ps != nil && ps.diff && !diff {
		ps.discard(errPrescanUnused) // (the published set changed since it started)
		ps = nil
	}
	if ps != nil {
		// Scanned while it downloaded (prescan.go): wait for the rest.
		select {
		case <-ps.done:
		case <-ctx.Done():
			ps.discard(ctx.Err())
			return ctx.Err()
		}
		sc, byName, raws, latest, records, err = ps.sc, ps.byName, ps.raws, ps.latest, ps.records, ps.err
		p.prescansTaken.Add(1)
		defer sc.Close()
		if live != ps.live { // (its look-ups went to the prescan's)
			ps.live.end()
			live.start(sc, byName)
		}
	} else {
		if sc, err = p.blobs.NewScratch(); err != nil {
			return err
		}
		defer sc.Close()
		byName = map[string]*scannedName{}
		live.start(sc, byName)
		raws, latest, records, err = p.scanStored(ctx, src, live, diff)
	}
	defer live.end()              // before the scratch file closes
	sums := map[string][32]byte{} // every name's raw digest
	transcoded := 0               // records (all of them unless diff)
	if err == nil && raws != nil {
		var changed []string
		var changedRecords int
		sums, changed, changedRecords = changedNames(raws, prev)
		if changedRecords*4 > records {
			// Most of it changed: the full scan, on every core.
			raws, sums = nil, map[string][32]byte{}
			_, latest, records, err = p.scanStored(ctx, src, live, false)
		} else {
			mode, transcoded = fmt.Sprintf("changed names only (%d)", len(changed)), changedRecords
			for name := range sums {
				if _, found := slices.BinarySearch(changed, name); !found {
					next.names[name] = prev.names[name]
				}
			}
			var b *store.Blob
			if b, err = p.blobs.Open(ctx, src); err == nil {
				err = transcodeChanged(ctx, b, raws, changed, live, &latest)
				b.Close()
			}
		}
	}
	if err != nil {
		if errors.Is(err, conda.ErrBadRepodata) {
			return fmt.Errorf("%w: %s/%s/repodata.json: %v", ErrCorrupt, ch.Name, subdir, err)
		}
		return err
	}
	if raws == nil {
		for name, sn := range byName {
			sums[name] = sn.raw.Sum()
		}
		transcoded = records
	}
	raws = nil

	scanned := time.Since(start)
	if err := live.scanned(); err != nil {
		return err
	}
	if p.scannedHook != nil {
		p.scannedHook()
	}

	// current_repodata.json and its .zst, beside the shards (a second of
	// a one-record change's derivation at conda-forge's size, most of it
	// otherwise on one core).
	type currentDone struct {
		files map[string]cid.Cid
		took  time.Duration
		err   error
	}
	currentc := make(chan currentDone, 1)
	currentEncoded := 0 // names encoded afresh (read once currentc answered)
	go func(latest *conda.Latest) {
		cur, encoded, err := cache.Build(subdir, sums, latest, prevDoc)
		if err != nil {
			currentc <- currentDone{err: err}
			return
		}
		currentEncoded = encoded
		type put struct {
			info store.BlobInfo
			err  error
		}
		plain := make(chan put, 1) // stored while the .zst is compressed
		go func() {
			info, err := p.blobs.Put(ctx, bytes.NewReader(cur), store.PutOptions{Deferred: true})
			plain <- put{info, err}
		}()
		zst, zerr := p.blobs.Put(ctx, bytes.NewReader(conda.AppendZstd(nil, cur)), store.PutOptions{Deferred: true})
		pl := <-plain
		if err := cmp.Or(pl.err, zerr); err != nil {
			currentc <- currentDone{err: err}
			return
		}
		currentc <- currentDone{files: map[string]cid.Cid{fileCurrent: pl.info.CID, fileCurrentZst: zst.CID}, took: time.Since(start)}
	}(&latest)
	currentJoined := false
	defer func() { // every way out waits for it: Close must not close the store under it
		if !currentJoined {
			<-currentc
		}
	}()

	// The shards, rebuilding only those whose content changed; the
	// compression of changed ones runs on as many goroutines as there are
	// CPUs (the scan above is one).
	names := sortedKeys(byName)
	var (
		mu      sync.Mutex
		built   int
		failed  error
		work    = make(chan shardJob, 64)
		free    = make(bufList, cap(work)+runtime.GOMAXPROCS(0)+1)
		workers sync.WaitGroup
	)
	for range runtime.GOMAXPROCS(0) {
		workers.Add(1)
		go func() {
			defer workers.Done()
			var comp []byte
			zc := conda.NewCompressor()
			for j := range work {
				comp = zc.Append(comp[:0], j.raw)
				free.put(j.raw)
				sum := sha256.Sum256(comp)
				_, err := p.blobs.Put(ctx, bytes.NewReader(comp), store.PutOptions{Deferred: true, Inline: true, WantSize: int64(len(comp)), WantSizeSet: true})
				mu.Lock()
				if err != nil && failed == nil {
					failed = err
				}
				ns := next.names[j.name]
				ns.shard = sum
				next.names[j.name] = ns
				built++
				mu.Unlock()
			}
		}()
	}
	err = p.assembleShards(ctx, sc, names, byName, prev, next, &mu, work, free)
	close(work)
	workers.Wait()
	if err == nil {
		err = failed
	}
	if err != nil {
		return err
	}
	for name, ns := range next.names {
		ns.raw = sums[name]
		next.names[name] = ns
	}
	next.hasRaw = true
	sharded := time.Since(start)
	cd := <-currentc
	currentJoined = true
	if cd.err != nil {
		return cd.err
	}
	maps.Copy(next.files, cd.files)
	current := cd.took
	digests := make(map[string][]byte, len(names))
	for name, ns := range next.names {
		next.shards[ns.shard] = true
		digests[name] = slices.Clone(ns.shard[:])
	}
	byName = nil
	index, err := conda.ShardIndex(subdir, digests)
	if err != nil {
		return err
	}
	info, err := p.blobs.Put(ctx, bytes.NewReader(index), store.PutOptions{Deferred: true})
	if err != nil {
		return err
	}
	next.files[fileShardIndex] = info.CID
	if prev != nil { // shards no longer current stay served for a while
		for sum, at := range prev.retired {
			if !next.shards[sum] && now.Sub(time.Unix(at, 0)) < conda.ShardKeep {
				next.retired[sum] = at
			}
		}
		for sum := range prev.shards {
			if !next.shards[sum] {
				next.retired[sum] = now.Unix()
			}
		}
	}
	indexed := time.Since(start)
	if !p.isCurrent(ctx, ch) {
		return fmt.Errorf("%w: %s", errEarlierIncarnation, ch.Name)
	}
	if err := p.publishSet(ctx, ch.Name, subdir, next); err != nil {
		return err
	}
	p.goBackground(func(ctx context.Context) {
		if _, err := p.lazyVariant(ctx, ch, subdir, fileZst, next); err != nil && ctx.Err() == nil {
			p.log.Warn("compress derived repodata.json.zst", "channel", ch.Name, "subdir", subdir, "err", err)
		}
	})
	p.derivations.Add(1)
	p.shardsBuilt.Add(uint64(built))
	p.currentEncoded.Add(uint64(currentEncoded))
	p.transcoded.Add(uint64(transcoded))
	if records >= freeAfterRecords {
		// What the derivation allocated is garbage now: return it to the
		// system at once rather than over minutes (idle RSS of a
		// conda-forge-sized proxy, docs/BENCHMARKS.md).
		p.goBackground(func(context.Context) { debug.FreeOSMemory() })
	}
	shardsChanged := built
	p.log.Info("derived index files from upstream repodata", "channel", ch.Name, "subdir", subdir, "records", records, "names", len(sums), "mode", mode, "shards_built", shardsChanged, "current_names_encoded", currentEncoded, "scanned", scanned, "current", current, "sharded", sharded, "indexed", indexed, "took", time.Since(start))
	return nil
}

// takeCurrentCache takes the CurrentCache of key(channel, subdir) out of
// the map (a new one if there is none), so that it is never used twice at
// once; putCurrentCache puts it back.
func (p *Proxy) takeCurrentCache(k string) *conda.CurrentCache {
	p.setsMu.Lock()
	defer p.setsMu.Unlock()
	c := p.currents[k]
	delete(p.currents, k)
	if c == nil {
		c = &conda.CurrentCache{}
	}
	return c
}

func (p *Proxy) putCurrentCache(k string, c *conda.CurrentCache) {
	p.setsMu.Lock()
	defer p.setsMu.Unlock()
	p.currents[k] = c
}

// scanStored scans the stored index src: raw (diffscan.go) or in full
// into live.
func (p *Proxy) scanStored(ctx context.Context, src cid.Cid, live *liveLookup, raw bool) (map[string]*rawName, conda.Latest, int, error) {
	b, err := p.blobs.Open(ctx, src)
	if err != nil {
		return nil, conda.Latest{}, 0, err
	}
	defer b.Close()
	if raw {
		raws, records, err := p.scanRaw(ctx, b)
		return raws, conda.Latest{}, records, err
	}
	latest, records, err := p.scanRecords(ctx, b, live)
	return nil, latest, records, err
}

// freeAfterRecords is the size of index from which a derivation returns
// the memory it freed to the system when it ends (a forced collection:
// tens of milliseconds, against seconds of deriving).
const freeAfterRecords = 100_000

// scanRecords scans the repodata.json r into live (its scratch file and
// per-name offsets, started by the caller) and the latest versions, for a
// derivation (from the stored file) or a prescan (from the download).
func (p *Proxy) scanRecords(ctx context.Context, r io.Reader, live *liveLookup) (latest conda.Latest, records int, err error) {
	_, err = conda.ScanShardPairs(r, conda.ScanOptions{Workers: p.scanWorkers(), SumJSON: true}, func(pr *conda.PairRecord) error {
		if records%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if p.scanHook != nil {
			p.scanHook(pr.Filename)
		}
		if err := live.add(pr); err != nil {
			return err
		}
		latest.AddPair(pr)
		records++
		return nil
	})
	return latest, records, err
}

// scanWorkers is how many goroutines transcode a derivation's records.
func (p *Proxy) scanWorkers() int {
	if p.cfg.ScanWorkers > 0 {
		return p.cfg.ScanWorkers
	}
	return runtime.GOMAXPROCS(0)
}

// shardJob is a changed shard to compress and store.
type shardJob struct {
	name string
	raw  []byte
}

// bufList recycles the raw shards between the assembler and the
// compressing workers (a new buffer per shard was most of a derivation's
// allocation).
type bufList chan []byte

func (l bufList) get() []byte {
	select {
	case b := <-l:
		return b[:0]
	default:
		return nil
	}
}

func (l bufList) put(b []byte) {
	select {
	case l <- b:
	default:
	}
}

// assembleShards builds each name's uncompressed shard from its entries
// in the scratch file and records it in next; a shard whose content equals
// the previous set's keeps its file, the others go to work (the shard
// file's sum is filled in by the worker, which hands the buffer back to
// free).
func (p *Proxy) assembleShards(ctx context.Context, sc *store.Scratch, names []string, byName map[string]*scannedName, prev, next *derivedSet, mu *sync.Mutex, work chan<- shardJob, free bufList) error {
	var buf, raw []byte
	var pkgs, condas [][]byte
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		sn := byName[name]
		ns := nameShard{}
		sn.sum.Sum(ns.entries[:0])
		if old, ok := prevName(prev, name); ok && old.entries == ns.entries {
			ns.shard = old.shard
			mu.Lock()
			next.names[name] = ns
			mu.Unlock()
			continue
		}
		refs := sn.refs
		// The entries of one name are mostly adjacent in the scratch file
		// (the upstream lists files sorted): one read per run of them.
		buf = buf[:0]
		for i := 0; i < len(refs); {
			j, end := i+1, refs[i].off+int64(refs[i].n)
			for j < len(refs) && refs[j].off == end {
				end += int64(refs[j].n)
				j++
			}
			n := int(end - refs[i].off)
			buf = slices.Grow(buf, n)[:len(buf)+n]
			if _, err := sc.ReadAt(buf[len(buf)-n:], refs[i].off); err != nil {
				return fmt.Errorf("proxy: read scratch file: %w", err)
			}
			i = j
		}
		pkgs, condas = pkgs[:0], condas[:0]
		at := 0
		for _, r := range refs {
			e := buf[at : at+int(r.n)]
			at += int(r.n)
			if r.conda {
				condas = append(condas, e)
			} else {
				pkgs = append(pkgs, e)
			}
		}
		sortPairs(pkgs)
		sortPairs(condas)
		raw = conda.AppendShard(free.get(), pkgs, condas)
		mu.Lock()
		next.names[name] = ns
		mu.Unlock()
		select {
		case work <- shardJob{name: name, raw: raw}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func prevName(prev *derivedSet, name string) (nameShard, bool) {
	if prev == nil {
		return nameShard{}, false
	}
	ns, ok := prev.names[name]
	return ns, ok
}

// sortPairs orders shard entries by file name (each starts with the
// MessagePack string of its file name), unless they are in order already.
func sortPairs(pairs [][]byte) {
	if len(pairs) < 2 {
		return
	}
	if !slices.IsSortedFunc(pairs, conda.CompareShardPairs) {
		slices.SortFunc(pairs, conda.CompareShardPairs)
	}
}

// putVariant stores the blob src transformed by compress, streaming.
func (p *Proxy) putVariant(ctx context.Context, src cid.Cid, compress func(io.Writer, io.Reader) error) (store.BlobInfo, error) {
	b, err := p.blobs.Open(ctx, src)
	if err != nil {
		return store.BlobInfo{}, err
	}
	defer b.Close()
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(compress(pw, b.Content()))
	}()
	info, err := p.blobs.Put(ctx, pr, store.PutOptions{Deferred: true})
	pr.CloseWithError(io.ErrClosedPipe) // stops the compressor if Put stopped early
	<-done                              // before b closes
	return info, err
}

// lazyVariant returns a published set's file derived on demand (see
// lazyVariants), deriving it (once however many ask) and adding it to the
// set.
func (p *Proxy) lazyVariant(ctx context.Context, ch *v1.Channel, subdir, file string, s *derivedSet) (cid.Cid, error) {
	if c, ok := s.files[file]; ok {
		return c, nil
	}
	v, err, _ := p.sf.Do("lazy\x00"+key(ch.Name, subdir+"/"+file)+"\x00"+s.src.KeyString(), func() (any, error) {
		// Shared by every caller waiting on it: the first one leaving must
		// not fail the others; Close stops it.
		ctx, cancel := context.WithTimeout(p.bg, p.cfg.DeriveTimeout)
		defer cancel()
		// s may be a caller's stale copy: a run that ended just before
		// this one began may have added the file already.
		if c, ok := p.publishedVariant(ch, subdir, file, s.src); ok {
			return c, nil
		}
		release, err := p.acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
		if c, ok := p.publishedVariant(ch, subdir, file, s.src); ok {
			return c, nil
		}
		if p.variantHook != nil {
			p.variantHook(file)
		}
		lv, from := lazyVariants[file], s.src
		if lv.from != "" {
			from = s.files[lv.from]
		}
		if file == fileZst && conda.FastZstd == conda.WholeZstd {
			// The stream clients get (or got) of the set's index is this
			// file: one compression for both. A finished one is kept
			// for it (keepCast); a running one is waited for.
			c := p.takeCast(ch, subdir, from)
			if c == nil {
				running, err := p.zstCastFor(ch, subdir)
				if err != nil {
					return nil, err
				}
				err = running.wait(ctx)
				running.release()
				if err != nil {
					return nil, err
				}
				c = p.takeCast(ch, subdir, from) // (nil: it compressed a newer index)
			}
			if c != nil {
				zst, err := p.storeCast(ctx, c)
				c.release()
				if err != nil {
					return nil, err
				}
				return zst, p.addVariant(ctx, ch, subdir, file, s.src, zst)
			}
		}
		if file == fileZst {
			p.zstCompressions.Add(1)
		}
		info, err := p.putVariant(ctx, from, lv.compress)
		if err != nil {
			return nil, err
		}
		if err := p.addVariant(ctx, ch, subdir, file, s.src, info.CID); err != nil {
			return nil, err
		}
		return info.CID, nil
	})
	if err != nil {
		return cid.Undef, err
	}
	return v.(cid.Cid), nil
}

// derivedFile answers file of subdir from its derived set, derived from
// the proxy's current copy of the subdir's repodata.json (fetched first if
// need be). An older set is served while the new one is derived, except
// for a shard the older set does not have: that waits for the new set
// (another node may already serve the index naming it).
func (p *Proxy) derivedFile(ctx context.Context, ch *v1.Channel, subdir, file string, ready bool) (Result, error) {
	src, err := p.latestIndex(ctx, ch, subdir+"/repodata.json")
	if err != nil {
		return Result{}, err
	}
	if ready { // no set yet: not worth waiting for
		if s, err := p.currentSet(ctx, ch, subdir); err != nil || s == nil {
			p.deriveAsync(ch, subdir, src.CID)
			return Result{}, fmt.Errorf("%w: %s/%s/%s is not derived yet", ErrNotFound, ch.Name, subdir, file)
		}
	}
	s, err := p.ensureSet(ctx, ch, subdir, src.CID, false)
	if err != nil {
		return Result{}, err
	}
	sum, isShard := shardSum(file)
	if isShard && !s.has(sum) && !s.src.Equals(src.CID) {
		if s, err = p.ensureSet(ctx, ch, subdir, src.CID, true); err != nil {
			return Result{}, err
		}
	}
	res := Result{ModTime: time.Unix(s.built, 0).UTC(), Age: src.Age, Stale: src.Stale, Immutable: isShard}
	switch {
	case isShard:
		if !s.has(sum) {
			return Result{}, fmt.Errorf("%w: %s/%s/%s", ErrNotFound, ch.Name, subdir, file)
		}
		res.CID = shardCID(sum)
		return res, nil
	case lazyVariants[file].compress != nil:
		c, ok := s.files[file]
		if !ok {
			if ready {
				p.goBackground(func(ctx context.Context) { _, _ = p.lazyVariant(ctx, ch, subdir, file, s) })
				return Result{}, fmt.Errorf("%w: %s/%s/%s is not derived yet", ErrNotFound, ch.Name, subdir, file)
			}
			if c, err = p.lazyVariant(ctx, ch, subdir, file, s); err != nil {
				return Result{}, err
			}
		}
		res.CID = c
		return res, nil
	}
	c, ok := s.files[file]
	if !ok {
		return Result{}, fmt.Errorf("%w: %s/%s/%s", ErrNotFound, ch.Name, subdir, file)
	}
	res.CID = c
	return res, nil
}

// want is what the upstream repodata says a package file is: the blob its
// sha256 names, and its size.
type want struct {
	cid  cid.Cid
	size int64
}

// packageEntry returns what the upstream's shard of fn's name says of
// package file fn when the upstream publishes shards (upshards.go), else
// what the subdir's published derived set says: the record of the index
// the proxy serves (see servedIndex). A file that set does not list while a newer one is
// derived waits for the newer one (a client may have its index from
// another node already).
func (p *Proxy) packageEntry(ctx context.Context, ch *v1.Channel, subdir, fn string) (want, error) {
	parsed, err := conda.ParseFilename(fn)
	if err != nil {
		return want{}, fmt.Errorf("%w: %s/%s/%s: %v", ErrNotFound, ch.Name, subdir, fn, err)
	}
	if w, ok, err := p.upstreamShardEntry(ctx, ch, subdir, parsed.Name, fn); err != nil || ok {
		return w, err
	}
	src, err := p.latestIndex(ctx, ch, subdir+"/repodata.json")
	if err != nil {
		return want{}, err
	}
	// The published set, if any; a newer one being derived is asked while
	// it runs (liveLookup), so a cold index's first package does not wait
	// for the whole set.
	s, err := p.currentSet(ctx, ch, subdir)
	if err != nil {
		return want{}, err
	}
	var w want
	found := false
	if s != nil {
		if w, found, err = p.lookupShard(ctx, s, parsed.Name, fn); err != nil {
			return want{}, err
		}
	}
	if !found && (s == nil || !s.src.Equals(src.CID)) {
		a, err := p.deriveAsync(ch, subdir, src.CID).live.find(ctx, parsed.Name, fn)
		if err != nil {
			return want{}, err
		}
		if a.decided {
			if !a.found {
				return want{}, fmt.Errorf("%w: %s/%s/%s is not in the upstream repodata.json", ErrNotFound, ch.Name, subdir, fn)
			}
			p.liveLookups.Add(1)
			return a.w, nil
		}
	}
	if !found && (s == nil || !s.src.Equals(src.CID)) {
		if s, err = p.ensureSet(ctx, ch, subdir, src.CID, true); err != nil {
			return want{}, err
		}
		if w, found, err = p.lookupShard(ctx, s, parsed.Name, fn); err != nil {
			return want{}, err
		}
	}
	if !found {
		return want{}, fmt.Errorf("%w: %s/%s/%s is not in the upstream repodata.json", ErrNotFound, ch.Name, subdir, fn)
	}
	return w, nil
}

// lookupShard finds fn in the shard of name in set s. A record without a
// valid sha256 and a positive size counts as absent: its bytes could not
// be checked.
func (p *Proxy) lookupShard(ctx context.Context, s *derivedSet, name, fn string) (want, bool, error) {
	ns, ok := s.names[name]
	if !ok {
		return want{}, false, nil
	}
	entries, err := p.shardEntries(ctx, ns.shard)
	if err != nil {
		return want{}, false, err
	}
	e, ok := entries[fn]
	if !ok {
		return want{}, false, nil
	}
	w, ok := entryWant(e)
	return w, ok, nil
}

// entryWant is what a shard entry says a package file must be; false if
// it has no valid sha256 and positive size (its bytes could not be
// checked).
func entryWant(e conda.ShardEntry) (want, bool) {
	if len(e.SHA256) != 32 || e.Size <= 0 {
		return want{}, false
	}
	c, err := store.CIDFromSHA256(e.SHA256)
	if err != nil {
		return want{}, false
	}
	return want{cid: c, size: e.Size}, true
}

// shardEntries decodes a stored shard, through a small cache (decoding a
// large name's shard takes milliseconds).
func (p *Proxy) shardEntries(ctx context.Context, sum [32]byte) (map[string]conda.ShardEntry, error) {
	p.setsMu.Lock()
	m, ok := p.entryCache[sum]
	p.setsMu.Unlock()
	if ok {
		return m, nil
	}
	b, err := p.blobs.ReadAll(ctx, shardCID(sum))
	if err != nil {
		return nil, err
	}
	if m, err = conda.ShardEntries(b); err != nil {
		return nil, err
	}
	p.setsMu.Lock()
	putBounded(p.entryCache, sum, m, entryCacheMax)
	p.setsMu.Unlock()
	return m, nil
}

const entryCacheMax = 256

// putBounded sets m[k] = v, first dropping an entry at random if k is new
// and m holds max entries already.
func putBounded[K comparable, V any](m map[K]V, k K, v V, max int) {
	if _, ok := m[k]; !ok && len(m) >= max {
		for other := range m {
			delete(m, other)
			break
		}
	}
	m[k] = v
}

// servedIndex answers a subdir's repodata.json with the source of the
// subdir's published derived set while a newer upstream copy (latest) is
// being derived: the index, its derived files and the package records all
// switch together once the new set is complete.
func (p *Proxy) servedIndex(ctx context.Context, ch *v1.Channel, subdir string, latest Result) Result {
	s, err := p.currentSet(ctx, ch, subdir)
	if err != nil || s == nil || s.src.Equals(latest.CID) || !p.blobs.Has(ctx, s.src) {
		return latest
	}
	p.deriveAsync(ch, subdir, latest.CID)
	latest.CID, latest.ModTime = s.src, time.Unix(s.built, 0).UTC()
	return latest
}

// streamZst answers a cold repodata.json.zst (no derived set yet) at once:
// compressed at conda.FastZstd while the upstream's repodata.json arrives
// or from the stored copy, one compression per subdir shared by every
// client asking meanwhile (zstCast), with no size and no ETag (its bytes
// are not the stored .zst's). The subdir's set is derived meanwhile; it
// serves the next requests. The sink's Begin comes with the first
// compressed bytes, so an upstream failure before any is an error.
func (p *Proxy) streamZst(ctx context.Context, ch *v1.Channel, subdir string, sink Sink) (Result, error) {
	res := Result{ModTime: p.cfg.Now(), Fetched: true, Streamed: true}
	c, err := p.zstCastFor(ch, subdir)
	if err != nil {
		return Result{}, err
	}
	if began, err := c.copyTo(ctx, sink, res); !began {
		return Result{}, err
	} else if err != nil {
		return res, err
	}
	return res, nil
}

// zstCastFor returns the running compression of subdir's cold .zst,
// starting one if none runs; the caller must copyTo it.
func (p *Proxy) zstCastFor(ch *v1.Channel, subdir string) (*zstCast, error) {
	k := key(ch.Name, subdir)
	p.castMu.Lock()
	defer p.castMu.Unlock()
	if c := p.casts[k]; c != nil {
		c.mu.Lock()
		c.users++
		c.mu.Unlock()
		return c, nil
	}
	sc, err := p.blobs.NewScratch()
	if err != nil {
		return nil, err
	}
	c := &zstCast{sc: sc, users: 2} // the producer and the caller
	c.grown = sync.NewCond(&c.mu)
	started := p.goBackground(func(ctx context.Context) {
		err := p.compressIndex(ctx, ch, subdir, c)
		p.castMu.Lock()
		delete(p.casts, k)
		if err == nil && c.src.Defined() {
			p.keepCastLocked(k, c)
		}
		p.castMu.Unlock()
		c.finish(err)
	})
	if !started {
		_ = sc.Close()
		return nil, context.Canceled // closing
	}
	if p.casts == nil {
		p.casts, p.kept = map[string]*zstCast{}, map[string]*zstCast{}
	}
	p.casts[k] = c
	p.zstStreams.Add(1)
	return c, nil
}

// keepCastLocked keeps the finished stream c of a stored index (the
// last one per subdir; an earlier one kept goes) for that index's set's
// .zst, which lazyVariant makes of it rather than compressing the index
// again. Under castMu.
func (p *Proxy) keepCastLocked(k string, c *zstCast) {
	c.mu.Lock()
	c.users++ // the keep's: its scratch file stays until taken or replaced
	c.mu.Unlock()
	if old := p.kept[k]; old != nil {
		old.release()
	}
	p.kept[k] = c
}

// takeCast returns the kept stream of subdir's index src, if any; the
// caller must release it.
func (p *Proxy) takeCast(ch *v1.Channel, subdir string, src cid.Cid) *zstCast {
	k := key(ch.Name, subdir)
	p.castMu.Lock()
	defer p.castMu.Unlock()
	c := p.kept[k]
	if c == nil || !c.src.Equals(src) {
		return nil
	}
	delete(p.kept, k)
	return c
}

// storeCast stores the finished stream c.
func (p *Proxy) storeCast(ctx context.Context, c *zstCast) (cid.Cid, error) {
	c.mu.Lock()
	size := c.size
	c.mu.Unlock()
	info, err := p.blobs.Put(ctx, io.NewSectionReader(c, 0, size), store.PutOptions{Deferred: true})
	return info.CID, err
}

// publishedVariant returns file of subdir's published set if that set
// is of src and has it.
func (p *Proxy) publishedVariant(ch *v1.Channel, subdir, file string, src cid.Cid) (cid.Cid, bool) {
	p.setsMu.Lock()
	defer p.setsMu.Unlock()
	if s := p.publishedSetLocked(ch, subdir, src); s != nil && s.files[file].Defined() {
		return s.files[file], true
	}
	return cid.Undef, false
}

// publishedSetLocked returns subdir's published set if it is of src (and
// of ch as it is now), else nil. Under setsMu.
func (p *Proxy) publishedSetLocked(ch *v1.Channel, subdir string, src cid.Cid) *derivedSet {
	s := p.setCache[key(ch.Name, subdir)]
	if s == nil || s.tag != setTag(ch) || !s.src.Equals(src) {
		return nil
	}
	return s
}

// addVariant adds file (blob v) to subdir's published set if that set is
// of src and has no such file yet (checked and published under one lock:
// two variants finishing at once both stay).
func (p *Proxy) addVariant(ctx context.Context, ch *v1.Channel, subdir, file string, src, v cid.Cid) error {
	if err := p.blobs.Sync(ctx); err != nil {
		return err
	}
	if _, err := p.currentSet(ctx, ch, subdir); err != nil { // (loaded)
		return err
	}
	p.setsMu.Lock()
	defer p.setsMu.Unlock()
	s := p.publishedSetLocked(ch, subdir, src)
	if s == nil || s.files[file].Defined() {
		return nil
	}
	withFile := *s
	withFile.files = make(map[string]cid.Cid, len(s.files)+1)
	maps.Copy(withFile.files, s.files)
	withFile.files[file] = v
	return p.publishLocked(ctx, ch.Name, subdir, &withFile)
}

// ZstCompressions counts the whole-file .zst compressions run, streamed
// or stored (one per index version when both are asked for).
func (p *Proxy) ZstCompressions() uint64 { return p.zstCompressions.Load() }

// ZstStreams counts the cold .zst compressions started (one per subdir
// at a time, however many clients ask).
func (p *Proxy) ZstStreams() uint64 { return p.zstStreams.Load() }

// compressIndex writes subdir's upstream repodata.json compressed at
// FastZstd to w: the stored copy, or the upstream fetch as it arrives.
func (p *Proxy) compressIndex(ctx context.Context, ch *v1.Channel, subdir string, w *zstCast) error {
	path := subdir + "/repodata.json"
	compress := func(r io.Reader) error {
		err := conda.ZstdStreamLevel(w, r, conda.FastZstd)
		if err == nil {
			p.zstCompressions.Add(1)
		}
		return err
	}
	if src, err := p.cachedSource(ctx, ch, path); err != nil || src != cid.Undef {
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.src = src
		w.mu.Unlock()
		p.deriveAsync(ch, subdir, src)
		b, err := p.blobs.Open(ctx, src)
		if err != nil {
			return err
		}
		defer b.Close()
		return compress(b.Content())
	}
	// Not stored: fetch it, compressing a copy of the body as it comes.
	pr, pw := io.Pipe()
	compressed := make(chan error, 1)
	go func() {
		err := compress(pr)
		pr.CloseWithError(err)
		compressed <- err
	}()
	tee := &teeOnce{w: pw}
	fetched, err, _ := p.sf.Do(key(ch.Name, path), func() (any, error) {
		return p.fetchTee(context.WithoutCancel(ctx), ch, path, nil, tee)
	})
	if err == nil && tee.used.Load() { // the stream is of the stored download
		w.mu.Lock()
		w.src = fetched.(Result).CID
		w.mu.Unlock()
	}
	switch {
	case err != nil:
		pw.CloseWithError(err)
	case !tee.used.Load():
		pw.CloseWithError(errNotTeed) // nothing was compressed
	default:
		pw.Close()
	}
	cerr := <-compressed
	if !tee.used.Load() && err == nil {
		// Another request fetched it: compress the stored copy.
		return p.compressIndex(ctx, ch, subdir, w)
	}
	if err != nil {
		return err
	}
	return cerr
}

// zstCast is one cold .zst compression shared by the clients asking for
// it while it runs (seven concurrent clients each compressing their own
// stream of a 500k-record index took the last one 10.7 s on two cores):
// the compressed bytes go to a scratch file, from which every client
// copies as it grows.
type zstCast struct {
	mu    sync.Mutex
	grown *sync.Cond
	sc    *store.Scratch
	size  int64 // bytes in sc
	done  bool
	err   error
	users int // clients copying, and the producer until it finishes
	// src is the stored repodata.json compressed (Undef while unknown,
	// and if the download compressed as it arrived was not stored).
	src cid.Cid
}

// ReadAt reads the stream's bytes (under the lock: the producer's writes
// go through the same scratch file).
func (c *zstCast) ReadAt(b []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sc.ReadAt(b, off)
}

// wait waits for the stream to end; it returns the cast's error.
func (c *zstCast) wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.grown.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.done && ctx.Err() == nil {
		c.grown.Wait()
	}
	if !c.done {
		return ctx.Err()
	}
	return c.err
}

// Write appends compressed bytes (the producer).
func (c *zstCast) Write(b []byte) (int, error) {
	c.mu.Lock()
	_, err := c.sc.Append(b)
	if err == nil {
		c.size += int64(len(b))
	}
	c.mu.Unlock()
	c.grown.Broadcast()
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

// finish ends the stream (err nil: complete).
func (c *zstCast) finish(err error) {
	c.mu.Lock()
	c.done, c.err = true, err
	c.mu.Unlock()
	c.grown.Broadcast()
	c.release()
}

func (c *zstCast) release() {
	c.mu.Lock()
	c.users--
	last := c.users == 0 && c.done
	c.mu.Unlock()
	if last {
		_ = c.sc.Close()
	}
}

// copyTo writes the stream to sink as it grows, beginning the answer on
// the first bytes (or at a complete empty end); began says whether it did,
// so an error before that can still be answered as an error.
func (c *zstCast) copyTo(ctx context.Context, sink Sink, res Result) (began bool, err error) {
	defer c.release()
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.grown.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	var w io.Writer
	begin := func() {
		if w = sink.Begin(res, -1); w == nil {
			w = io.Discard
		}
	}
	buf := make([]byte, 256<<10)
	var off int64
	for {
		c.mu.Lock()
		for off == c.size && !c.done && ctx.Err() == nil {
			c.grown.Wait()
		}
		if err := ctx.Err(); err != nil {
			c.mu.Unlock()
			return w != nil, err
		}
		if off == c.size { // done
			err := c.err
			c.mu.Unlock()
			if w == nil && err == nil {
				begin()
			}
			return w != nil, err
		}
		n := int(min(int64(len(buf)), c.size-off))
		_, err := c.sc.ReadAt(buf[:n], off)
		c.mu.Unlock()
		if err != nil {
			return w != nil, err
		}
		if w == nil {
			begin()
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return true, err
		}
		off += int64(n)
	}
}

var errNotTeed = errors.New("proxy: fetched by another request")

// cachedSource returns the blob of the stored copy of path, or cid.Undef.
func (p *Proxy) cachedSource(ctx context.Context, ch *v1.Channel, path string) (cid.Cid, error) {
	e, err := p.cat.ProxyEntry(ctx, ch.Name, path)
	if errors.Is(err, catalog.ErrNotFound) {
		return cid.Undef, nil
	}
	if err != nil {
		return cid.Undef, err
	}
	if e.Status != 200 || strings.HasPrefix(e.Etag, legacyDerivedPrefix) {
		return cid.Undef, nil
	}
	if h, ok := p.stored(ctx, ch.Name, path, e); ok {
		return h.cid, nil
	}
	return cid.Undef, nil
}

// teeOnce is a fetch's copy of the body for one streaming client; used
// tells whether the fetch ran for it (not another request's fetch). Once
// the client is gone (the pipe broke), the rest is dropped: the fetch
// goes on for the others.
type teeOnce struct {
	w      *io.PipeWriter
	used   atomic.Bool
	broken bool
}

func (t *teeOnce) Write(b []byte) (int, error) {
	t.used.Store(true)
	if !t.broken {
		if _, err := t.w.Write(b); err != nil {
			t.broken = true
		}
	}
	return len(b), nil
}
