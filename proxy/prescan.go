package proxy

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/ipfs/go-cid"

	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
)

// Scanning while fetching. A derivation's scan (a second or two for a
// conda-forge-sized index) used to start once the upstream's
// repodata.json was downloaded and stored (most of a second more): the
// fetch now copies the body into a scratch file as it arrives, and a scan
// follows that file, so the derivation that the fetch starts finds its
// records scanned already (or nearly). The scan never slows the download:
// it reads what was written, on disk, at its own pace. Package look-ups
// meanwhile are answered from it as from a derivation's (liveLookup).
// Config.NoScanWhileFetching turns it off.

// prescan is the scan of a repodata.json being fetched.
type prescan struct {
	subdir  string
	body    *growing // the download, as it is written
	live    *liveLookup
	sc      *store.Scratch // shard entries (liveLookup's)
	byName  map[string]*scannedName
	diff    bool                // a raw scan (diffscan.go): raws, not byName
	raws    map[string]*rawName // a raw scan's
	latest  conda.Latest
	records int
	err     error
	done    chan struct{} // the scan ended (err says how)
	src     cid.Cid       // the stored download, once the fetch succeeded
}

// startPrescan starts scanning a download of ch's subdir/repodata.json, or
// returns nil when it would exceed Config.Derivations scans at once (the
// derivation then scans the stored file as before).
func (p *Proxy) startPrescan(ch *v1.Channel, subdir string) *prescan {
	select {
	case p.prescanSlots <- struct{}{}:
	default:
		return nil
	}
	release := func() { <-p.prescanSlots }
	bodySc, err := p.blobs.NewScratch()
	if err != nil {
		release()
		return nil
	}
	sc, err := p.blobs.NewScratch()
	if err != nil {
		_ = bodySc.Close()
		release()
		return nil
	}
	ps := &prescan{subdir: subdir, body: newGrowing(bodySc), live: newLiveLookup(), sc: sc, byName: map[string]*scannedName{}, diff: p.diffable(ch, subdir), done: make(chan struct{})}
	ps.live.start(sc, ps.byName)
	started := p.goBackground(func(ctx context.Context) {
		defer release()
		defer close(ps.done)
		defer ps.body.close()
		ctx, cancel := context.WithTimeout(ctx, p.cfg.DeriveTimeout)
		defer cancel()
		stop := context.AfterFunc(ctx, func() { ps.body.fail(ctx.Err()) })
		defer stop()
		if ps.diff {
			ps.raws, ps.records, ps.err = p.scanRaw(ctx, ps.body.reader())
			return
		}
		ps.latest, ps.records, ps.err = p.scanRecords(ctx, ps.body.reader(), ps.live)
	})
	if !started {
		_ = bodySc.Close()
		_ = sc.Close()
		release()
		close(ps.done)
		return nil
	}
	return ps
}

// diffable says whether a derivation of subdir would likely transcode
// only the names that changed (diffscan.go): its published set has raw
// digests and its CurrentCache is there. The derivation checks it again
// (the cache must hold the set's document) and scans afresh if not.
func (p *Proxy) diffable(ch *v1.Channel, subdir string) bool {
	s, err := p.currentSet(p.bg, ch, subdir)
	if err != nil || s == nil || !s.hasRaw {
		return false
	}
	p.setsMu.Lock()
	defer p.setsMu.Unlock()
	return p.currents[key(ch.Name, subdir)] != nil
}

// discard ends a prescan nobody will take (the fetch failed, or a newer
// one replaced it): its scan stops, its files go.
func (ps *prescan) discard(err error) {
	ps.body.fail(err)
	ps.live.end()
	go func() {
		<-ps.done
		_ = ps.sc.Close()
	}()
}

// keepPrescan records ps, whose download was stored as src, for the
// derivation of src to take; an earlier one not taken is discarded.
func (p *Proxy) keepPrescan(ch *v1.Channel, ps *prescan, src cid.Cid) {
	ps.src = src
	ps.body.finish()
	k := key(ch.Name, ps.subdir)
	p.mu.Lock()
	old := p.prescans[k]
	p.prescans[k] = ps
	p.mu.Unlock()
	if old != nil {
		old.discard(errPrescanReplaced)
	}
}

// takePrescan removes and returns the kept prescan of src for subdir.
func (p *Proxy) takePrescan(ch *v1.Channel, subdir string, src cid.Cid) *prescan {
	k := key(ch.Name, subdir)
	p.mu.Lock()
	defer p.mu.Unlock()
	if ps := p.prescans[k]; ps != nil && ps.src.Equals(src) {
		delete(p.prescans, k)
		return ps
	}
	return nil
}

var errPrescanReplaced = errors.New("proxy: a newer download of the index is being scanned")

// growing is a file being written by one goroutine (the download) and
// read, behind it, by another (the scan): a reader that catches up waits
// for more, and ends where the writer finished, or fails as it failed.
// The reader reads the file outside the lock, what was flushed, so the
// download never waits for it.
type growing struct {
	mu       sync.Mutex
	more     *sync.Cond
	sc       *store.Scratch
	flushed  int64 // bytes readers may read
	finished bool
	err      error
}

// growingFlush is how much the download writes between flushes.
const growingFlush = 256 << 10

func newGrowing(sc *store.Scratch) *growing {
	g := &growing{sc: sc}
	g.more = sync.NewCond(&g.mu)
	return g
}

// Write appends b (the download's tee). It never fails: a scan that
// cannot follow stops, and the download goes on without it.
func (g *growing) Write(b []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return len(b), nil
	}
	if _, err := g.sc.Append(b); err != nil {
		g.err = err
	} else if g.sc.Size()-g.flushed >= growingFlush {
		g.flushLocked()
	}
	return len(b), nil
}

func (g *growing) flushLocked() {
	if err := g.sc.Flush(); err != nil && g.err == nil {
		g.err = err
	}
	g.flushed = g.sc.Size()
	g.more.Broadcast()
}

// close ends the file for good (the scan is over, whatever the
// download does next) and removes it. Only the reader's goroutine calls
// it, so no read runs meanwhile.
func (g *growing) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		g.err = errScanEnded
	}
	_ = g.sc.Close()
}

var errScanEnded = errors.New("proxy: the scan ended")

// finish says the whole file was written.
func (g *growing) finish() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		g.flushLocked()
	}
	g.finished = true
	g.more.Broadcast()
}

// fail ends the file with err: readers get it.
func (g *growing) fail(err error) {
	g.mu.Lock()
	if g.err == nil {
		g.err = err
	}
	g.more.Broadcast()
	g.mu.Unlock()
}

func (g *growing) reader() io.Reader { return &growingReader{g: g} }

type growingReader struct {
	g   *growing
	off int64
}

func (r *growingReader) Read(b []byte) (int, error) {
	g := r.g
	g.mu.Lock()
	for g.err == nil && !g.finished && g.flushed <= r.off {
		g.more.Wait()
	}
	err, avail := g.err, g.flushed-r.off
	g.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if avail <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > avail {
		b = b[:avail]
	}
	n, err := g.sc.ReadFlushedAt(b, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}
