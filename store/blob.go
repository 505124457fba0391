package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// CIDFromSHA256 returns the CIDv1 (raw codec, sha2-256) naming the blob
// whose sha256 is sum. A conda record's sha256 therefore names its package
// before it is downloaded.
func CIDFromSHA256(sum []byte) (cid.Cid, error) {
	mh, err := multihash.Encode(sum, multihash.SHA2_256)
	if err != nil {
		return cid.Undef, fmt.Errorf("store: encode multihash: %w", err)
	}
	return cid.NewCidV1(cid.Raw, mh), nil
}

// CIDFromHex is CIDFromSHA256 for a hex digest.
func CIDFromHex(sha256Hex string) (cid.Cid, error) {
	sum, err := hex.DecodeString(sha256Hex)
	if err != nil || len(sum) != sha256.Size {
		return cid.Undef, fmt.Errorf("store: bad sha256 %q", sha256Hex)
	}
	return CIDFromSHA256(sum)
}

// SHA256Of returns the sha256 digest carried by a CID made by CIDFromSHA256.
func SHA256Of(c cid.Cid) ([]byte, error) {
	dm, err := multihash.Decode(c.Hash())
	if err != nil {
		return nil, fmt.Errorf("store: decode cid: %w", err)
	}
	if dm.Code != multihash.SHA2_256 || c.Type() != cid.Raw {
		return nil, fmt.Errorf("store: cid %s is not raw sha2-256", c)
	}
	return dm.Digest, nil
}

// BlobInfo describes a stored blob.
type BlobInfo struct {
	CID      cid.Cid
	Size     int64
	SHA256   []byte
	Inline   bool      // bytes live in Pebble, not in a file
	Verified time.Time // when the bytes were last hashed
	// Existed is set by Put when the blob was already stored before the
	// call (the bytes were deduplicated, nothing new was written).
	Existed bool
}

// PutOptions constrain a Put.
type PutOptions struct {
	// WantSHA256, if set, is the digest the bytes must have; otherwise Put
	// fails with *DigestMismatchError and stores nothing.
	WantSHA256 []byte
	// WantSize, if >= 0 and WantSet, is the exact length the bytes must have.
	WantSize    int64
	WantSizeSet bool
	// MaxSize, if > 0, aborts the write with ErrTooLarge once exceeded.
	MaxSize int64
	// Tee, if set, receives every byte as it is written (to compute other
	// digests in the same pass).
	Tee io.Writer
	// Inline keeps the bytes in the index (Pebble) up to MaxInline bytes,
	// whatever the store's InlineThreshold: for many blobs of tens of
	// kilobytes written together with Deferred (a proxy's derived shards),
	// one synced log write instead of a file, an fsync and a rename each
	// (25,000 shards of a conda-forge-sized index: seconds of fsyncs).
	// Give the size (WantSize) so the read buffer fits it.
	Inline bool
	// Deferred skips the synced write of the blob's index record; the
	// caller makes a batch of such blobs durable with one Sync before it
	// publishes anything referencing them. A crash before that Sync may
	// forget the blob (never corrupt it). File contents are always fsynced.
	Deferred bool
	// Absent says the caller has just found the blob missing (Has): a small
	// blob is then written without looking for it again. Should it have
	// appeared meanwhile, the bytes written are the same ones. Existed is
	// never set then.
	Absent bool
	// Check, if set, is given the whole bytes once they are hashed and
	// verified, before the blob becomes visible; an error from it aborts
	// the Put (nothing new is stored) and is returned as it is. It runs
	// while the file is being made durable (fsync), so a check that reads
	// the bytes costs little extra time. It runs for bytes already stored
	// too (the caller's check may depend on more than the bytes).
	Check func(r io.ReaderAt, size int64) error
}

const (
	kindInline byte = 1
	kindFile   byte = 2
)

func blobKey(c cid.Cid) []byte { return []byte(blobPrefix + c.String()) }

func (s *Store) blobPath(c cid.Cid) string {
	name := c.String()
	return s.path("blobs", name[len(name)-2:], name)
}

// Put streams r into the store, hashing while it writes, and returns the
// blob's info once it is whole, verified, durable and visible. A failed or
// cancelled Put leaves nothing visible. Putting bytes that already exist is
// cheap and returns the existing blob (Existed set), re-verified now. Of
// concurrent Puts of the same new bytes exactly one reports them as new
// (without Absent). Existed says nothing about who references a blob:
// callers never delete a blob because their own Put created it (the sweep
// deletes what nothing references, DeleteIfStale).
func (s *Store) Put(ctx context.Context, r io.Reader, opt PutOptions) (BlobInfo, error) {
	if s.closed.Load() {
		return BlobInfo{}, ErrClosed
	}
	h := sha256.New()
	var w io.Writer = h
	if opt.Tee != nil {
		w = io.MultiWriter(h, opt.Tee)
	}
	r = &ctxReader{ctx: ctx, r: r}
	limit := s.cfg.InlineThreshold
	if opt.Inline {
		limit = max(limit, MaxInline)
	}
	// Read up to limit+1 bytes into a buffer that leaves room in front for
	// the record's header, so an inline blob's record is built in place.
	want := limit + 1
	if opt.WantSizeSet && opt.WantSize >= 0 && opt.WantSize < limit {
		want = opt.WantSize + 1 // one more, to see a longer body
	}
	bp := inlineBufs.Get().(*[]byte)
	defer inlineBufs.Put(bp)
	if int64(cap(*bp)) < metaMax+want {
		*bp = make([]byte, metaMax+want)
	}
	buf := (*bp)[:metaMax+want]
	n, whole, err := readFull(r, buf[metaMax:])
	if err != nil {
		return BlobInfo{}, fmt.Errorf("store: read blob: %w", err)
	}
	data := buf[metaMax : metaMax+n]
	if opt.MaxSize > 0 && int64(n) > opt.MaxSize {
		return BlobInfo{}, ErrTooLarge
	}
	if whole && int64(n) <= limit {
		_, _ = w.Write(data)
		info, err := s.finish(h, int64(n), opt)
		if err != nil {
			return BlobInfo{}, err
		}
		if opt.Check != nil {
			if err := opt.Check(bytes.NewReader(data), int64(n)); err != nil {
				return BlobInfo{}, err
			}
		}
		mu := s.blobLock(info.CID)
		mu.Lock()
		defer mu.Unlock()
		if !opt.Absent {
			if existing, ok := s.refresh(ctx, info.CID); ok {
				return existing, nil
			}
		}
		info.Inline = true
		hdr := appendBlobMetaHeader(make([]byte, 0, metaMax), info)
		rec := buf[metaMax-len(hdr) : metaMax+n]
		copy(rec, hdr)
		if err := s.db.Set(blobKey(info.CID), rec, writeOpts(opt)); err != nil { // Set copies rec
			return BlobInfo{}, fmt.Errorf("store: index inline blob: %w", err)
		}
		return info, nil
	}
	return s.putFile(ctx, io.MultiReader(bytes.NewReader(data), r), h, opt)
}

// MaxInline is the most PutOptions.Inline keeps in the index.
const MaxInline = 4 << 20

// readFull reads into b until it is full (whole is false: there may be
// more) or r ends (whole is true). Unlike io.ReadFull it tells a reader's
// own error, such as a truncated HTTP body's io.ErrUnexpectedEOF, from
// the end of the bytes.
func readFull(r io.Reader, b []byte) (n int, whole bool, err error) {
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// putChunk is the copy buffer of a file blob's write.
const putChunk = 256 << 10

// asyncTee writes what it is given to w on its own goroutine, through two
// buffers: the writer's work overlaps the caller's. w must not fail (a
// digest). wait returns once w has had every byte; it may be called more
// than once.
type asyncTee struct {
	w    io.Writer
	work chan []byte
	free chan []byte
	done chan struct{}
	once sync.Once
}

func newAsyncTee(w io.Writer, size int) *asyncTee {
	t := &asyncTee{w: w, work: make(chan []byte, 2), free: make(chan []byte, 2), done: make(chan struct{})}
	t.free <- make([]byte, 0, size)
	t.free <- make([]byte, 0, size)
	go func() {
		defer close(t.done)
		for b := range t.work {
			_, _ = t.w.Write(b)
			t.free <- b[:0]
		}
	}()
	return t
}

func (t *asyncTee) Write(p []byte) (int, error) {
	b := <-t.free
	t.work <- append(b, p...)
	return len(p), nil
}

func (t *asyncTee) wait() {
	t.once.Do(func() { close(t.work) })
	<-t.done
}

// inlineBufs recycles Put's read buffers.
var inlineBufs = sync.Pool{New: func() any { return new([]byte) }}

func (s *Store) putFile(ctx context.Context, r io.Reader, h hash.Hash, opt PutOptions) (BlobInfo, error) {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	tmp := s.path("tmp", hex.EncodeToString(rnd[:]))
	f, err := s.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return BlobInfo{}, fmt.Errorf("store: create temp blob: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = f.Close()
			_ = s.fs.Remove(tmp)
		}
	}()
	var src io.Reader = r
	if opt.MaxSize > 0 {
		src = io.LimitReader(r, opt.MaxSize+1)
	}
	// Hash before writing: vfs.File.Write may modify the slice it is given.
	// The caller's Tee (md5, say) runs on its own goroutine beside the
	// sha256 and the write.
	var w io.Writer = h
	var tee *asyncTee
	if opt.Tee != nil {
		tee = newAsyncTee(opt.Tee, putChunk)
		defer tee.wait()
		w = io.MultiWriter(h, tee)
	}
	n, err := io.CopyBuffer(io.MultiWriter(w, f), src, make([]byte, putChunk))
	if tee != nil {
		tee.wait() // the Tee has every byte before Put returns
	}
	if err != nil {
		return BlobInfo{}, fmt.Errorf("store: write blob: %w", err)
	}
	if opt.MaxSize > 0 && n > opt.MaxSize {
		return BlobInfo{}, ErrTooLarge
	}
	info, err := s.finish(h, n, opt)
	if err != nil {
		return BlobInfo{}, err
	}
	// The caller's check reads the temp file while it is synced.
	checked := make(chan error, 1)
	if opt.Check != nil {
		go func() { checked <- opt.Check(f, n) }()
	} else {
		checked <- nil
	}
	pending := true
	wait := func() error { pending = false; return <-checked }
	defer func() { // before the cleanup above closes f
		if pending {
			<-checked
		}
	}()
	if _, ok := s.stat(ctx, info.CID); ok {
		if err := wait(); err != nil {
			return BlobInfo{}, err
		}
		if existing, ok := s.lockedRefresh(ctx, info.CID); ok {
			return existing, nil
		}
	}
	if err := f.Sync(); err != nil {
		return BlobInfo{}, fmt.Errorf("store: sync blob: %w", err)
	}
	if pending {
		if err := wait(); err != nil {
			return BlobInfo{}, err
		}
	}
	if err := f.Close(); err != nil {
		return BlobInfo{}, fmt.Errorf("store: close blob: %w", err)
	}
	committed = true // from here on the deferred cleanup must not double-close
	// Look again under the CID's lock: a concurrent Put of the same bytes
	// may have committed meanwhile (then this one reports Existed), and a
	// sweep's delete must not remove the file this rename puts in place.
	mu := s.blobLock(info.CID)
	mu.Lock()
	defer mu.Unlock()
	if existing, ok := s.refresh(ctx, info.CID); ok {
		_ = s.fs.Remove(tmp)
		return existing, nil
	}
	final := s.blobPath(info.CID)
	dir := s.fs.PathDir(final)
	if err := s.fs.MkdirAll(dir, 0o755); err != nil {
		_ = s.fs.Remove(tmp)
		return BlobInfo{}, fmt.Errorf("store: create blob dir: %w", err)
	}
	if err := s.fs.Rename(tmp, final); err != nil {
		_ = s.fs.Remove(tmp)
		return BlobInfo{}, fmt.Errorf("store: publish blob: %w", err)
	}
	if err := syncDir(s.fs, dir); err != nil {
		return BlobInfo{}, err
	}
	if err := s.db.Set(blobKey(info.CID), encodeBlobMeta(info, nil), writeOpts(opt)); err != nil {
		return BlobInfo{}, fmt.Errorf("store: index blob: %w", err)
	}
	return info, nil
}

func writeOpts(opt PutOptions) *pebble.WriteOptions {
	if opt.Deferred {
		return pebble.NoSync
	}
	return pebble.Sync
}

// Sync makes every earlier write durable (the Deferred puts among them).
func (s *Store) Sync(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	return nil
}

// Adopt is for a caller about to reference a blob that is already stored
// (a mirror or proxy that finds the bytes it needs): it marks the blob as
// verified now under the CID's lock, so a sweep that did not see the new
// reference yet leaves it alone for its grace period. It returns
// ErrNotFound if the blob is not stored (or a sweep just deleted it): the
// caller stores the bytes again.
func (s *Store) Adopt(ctx context.Context, c cid.Cid) (BlobInfo, error) {
	info, ok := s.lockedRefresh(ctx, c)
	if !ok {
		return BlobInfo{}, fmt.Errorf("%w: %s", ErrNotFound, c)
	}
	return info, nil
}

// lockedRefresh is refresh under the CID's lock.
func (s *Store) lockedRefresh(ctx context.Context, c cid.Cid) (BlobInfo, bool) {
	mu := s.blobLock(c)
	mu.Lock()
	defer mu.Unlock()
	return s.refresh(ctx, c)
}

// refresh marks an existing blob as verified now (its bytes were just
// hashed again by a Put), which also protects it from a garbage-collection
// sweep for the sweep's grace period. ok is false if the blob is absent.
// The caller holds the CID's lock (blobLock): a delete between the read
// and the write would otherwise leave a record without its file.
func (s *Store) refresh(ctx context.Context, c cid.Cid) (BlobInfo, bool) {
	v, err := s.Get(ctx, blobKey(c))
	if err != nil {
		return BlobInfo{}, false
	}
	info, data, err := decodeBlobMeta(c, v)
	if err != nil {
		return BlobInfo{}, false
	}
	info.Verified = time.Now().UTC().Truncate(time.Second)
	if err := s.db.Set(blobKey(c), encodeBlobMeta(info, data), pebble.NoSync); err != nil {
		s.log.Warn("refresh blob record", "cid", c, "err", err)
	}
	info.Existed = true
	return info, true
}

func (s *Store) finish(h hash.Hash, n int64, opt PutOptions) (BlobInfo, error) {
	sum := h.Sum(nil)
	if opt.WantSHA256 != nil && !bytes.Equal(sum, opt.WantSHA256) {
		return BlobInfo{}, &DigestMismatchError{Want: hex.EncodeToString(opt.WantSHA256), Got: hex.EncodeToString(sum)}
	}
	if opt.WantSizeSet && n != opt.WantSize {
		return BlobInfo{}, fmt.Errorf("%w: want %d bytes, got %d", ErrSizeMismatch, opt.WantSize, n)
	}
	c, err := CIDFromSHA256(sum)
	if err != nil {
		return BlobInfo{}, err
	}
	return BlobInfo{CID: c, Size: n, SHA256: sum, Verified: time.Now().UTC().Truncate(time.Second)}, nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("store: open dir for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: sync dir: %w", err)
	}
	return nil
}

// encodeBlobMeta lays out a blob index record: kind (1 byte), size (uvarint),
// verified-at unix seconds (uvarint), then the inline bytes if any.
// metaMax is the longest header of a blob record.
const metaMax = 1 + 2*binary.MaxVarintLen64

func encodeBlobMeta(info BlobInfo, data []byte) []byte {
	out := appendBlobMetaHeader(make([]byte, 0, metaMax+len(data)), info)
	return append(out, data...)
}

// appendBlobMetaHeader appends a blob record's header: kind, size and
// verification time; an inline blob's bytes follow it.
func appendBlobMetaHeader(out []byte, info BlobInfo) []byte {
	kind := kindFile
	if info.Inline {
		kind = kindInline
	}
	out = append(out, kind)
	out = binary.AppendUvarint(out, uint64(info.Size))
	return binary.AppendUvarint(out, uint64(info.Verified.Unix()))
}

func decodeBlobMeta(c cid.Cid, v []byte) (BlobInfo, []byte, error) {
	if len(v) < 1 {
		return BlobInfo{}, nil, fmt.Errorf("store: corrupt blob record for %s", c)
	}
	kind := v[0]
	size, n := binary.Uvarint(v[1:])
	if n <= 0 {
		return BlobInfo{}, nil, fmt.Errorf("store: corrupt blob record for %s", c)
	}
	ver, m := binary.Uvarint(v[1+n:])
	if m <= 0 {
		return BlobInfo{}, nil, fmt.Errorf("store: corrupt blob record for %s", c)
	}
	data := v[1+n+m:]
	sum, err := SHA256Of(c)
	if err != nil {
		return BlobInfo{}, nil, err
	}
	info := BlobInfo{CID: c, Size: int64(size), SHA256: sum, Inline: kind == kindInline, Verified: time.Unix(int64(ver), 0).UTC()}
	if info.Inline && int64(len(data)) != info.Size {
		return BlobInfo{}, nil, fmt.Errorf("store: corrupt inline blob %s", c)
	}
	return info, data, nil
}

// Stat returns the info of a stored blob, or ErrNotFound.
func (s *Store) Stat(ctx context.Context, c cid.Cid) (BlobInfo, error) {
	v, err := s.Get(ctx, blobKey(c))
	if err != nil {
		return BlobInfo{}, err
	}
	info, _, err := decodeBlobMeta(c, v)
	return info, err
}

// stat is Stat reporting only presence.
func (s *Store) stat(ctx context.Context, c cid.Cid) (BlobInfo, bool) {
	info, err := s.Stat(ctx, c)
	return info, err == nil
}

// Has reports whether the blob is stored.
func (s *Store) Has(ctx context.Context, c cid.Cid) bool {
	_, err := s.Stat(ctx, c)
	return err == nil
}

// Blob is an open stored blob. Read, Seek and ReadAt work on every blob;
// File returns the *os.File of an on-disk blob so HTTP can serve it with
// sendfile. Close must be called.
type Blob struct {
	Info BlobInfo
	io.ReadSeeker
	io.ReaderAt
	closer io.Closer
	file   *os.File
}

// Close releases the blob.
func (b *Blob) Close() error {
	if b.closer == nil {
		return nil
	}
	return b.closer.Close()
}

// File returns the underlying operating-system file, or nil for inline blobs
// and in-memory filesystems.
func (b *Blob) File() *os.File { return b.file }

// Content returns the best io.ReadSeeker to serve: the *os.File when there is
// one (zero-copy), otherwise the blob itself.
func (b *Blob) Content() io.ReadSeeker {
	if b.file != nil {
		return b.file
	}
	return b.ReadSeeker
}

// Open opens a stored blob for reading, or returns ErrNotFound.
func (s *Store) Open(ctx context.Context, c cid.Cid) (*Blob, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if hb, ok := s.hot.get(c); ok {
		r := bytes.NewReader(hb.data)
		return &Blob{Info: hb.info, ReadSeeker: r, ReaderAt: r}, nil
	}
	v, err := s.Get(ctx, blobKey(c))
	if err != nil {
		return nil, err
	}
	info, data, err := decodeBlobMeta(c, v)
	if err != nil {
		return nil, err
	}
	if info.Inline {
		s.hot.add(c, hotBlob{info: info, data: data})
		r := bytes.NewReader(data)
		return &Blob{Info: info, ReadSeeker: r, ReaderAt: r}, nil
	}
	p := s.blobPath(c)
	if s.osFS {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("store: open blob %s: %w", c, err)
		}
		return &Blob{Info: info, ReadSeeker: f, ReaderAt: f, closer: f, file: f}, nil
	}
	f, err := s.fs.Open(p)
	if err != nil {
		return nil, fmt.Errorf("store: open blob %s: %w", c, err)
	}
	sr := io.NewSectionReader(f, 0, info.Size)
	return &Blob{Info: info, ReadSeeker: sr, ReaderAt: sr, closer: f}, nil
}

// ReadAll returns a blob's bytes; meant for small blobs (indexes).
func (s *Store) ReadAll(ctx context.Context, c cid.Cid) ([]byte, error) {
	b, err := s.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	out := make([]byte, b.Info.Size)
	if _, err := io.ReadFull(b, out); err != nil {
		return nil, fmt.Errorf("store: read blob %s: %w", c, err)
	}
	return out, nil
}

// blobLockStripes is the number of locks CIDs are spread over.
const blobLockStripes = 64

// blobLock returns the lock of c's stripe.
func (s *Store) blobLock(c cid.Cid) *sync.Mutex {
	h := c.Hash()
	return &s.blobLocks[int(h[len(h)-1])%blobLockStripes]
}

// Delete removes a blob, whoever may still reference it; the blob sweep
// uses DeleteIfStale instead. The index record goes first, so a crash in
// between leaves an unindexed file that the next Open re-verifies.
func (s *Store) Delete(ctx context.Context, c cid.Cid) error {
	mu := s.blobLock(c)
	mu.Lock()
	defer mu.Unlock()
	info, err := s.Stat(ctx, c)
	if err != nil {
		return err
	}
	return s.deleteLocked(c, info)
}

// DeleteIfStale removes a blob unless it was written or verified at or
// after cutoff (a Put of its bytes counts: it re-verifies them). The check
// and the delete are atomic with respect to Put, so a blob a concurrent
// Put has just returned is never removed under it. deleted reports
// whether it was removed; a missing blob is ErrNotFound.
func (s *Store) DeleteIfStale(ctx context.Context, c cid.Cid, cutoff time.Time) (deleted bool, err error) {
	mu := s.blobLock(c)
	mu.Lock()
	defer mu.Unlock()
	info, err := s.Stat(ctx, c)
	if err != nil {
		return false, err
	}
	if !info.Verified.Before(cutoff) {
		return false, nil
	}
	return true, s.deleteLocked(c, info)
}

// deleteLocked removes a blob whose stripe lock the caller holds.
func (s *Store) deleteLocked(c cid.Cid, info BlobInfo) error {
	s.hot.remove(c)
	if err := s.db.Delete(blobKey(c), pebble.Sync); err != nil {
		return fmt.Errorf("store: unindex blob: %w", err)
	}
	if !info.Inline {
		if err := s.fs.Remove(s.blobPath(c)); err != nil && !oserrorNotExist(err) {
			return fmt.Errorf("store: remove blob file: %w", err)
		}
	}
	return nil
}

// List calls fn for every stored blob in CID order.
func (s *Store) List(ctx context.Context, fn func(BlobInfo) error) error {
	return s.Scan(ctx, []byte(blobPrefix), func(k, v []byte) error {
		c, err := cid.Decode(string(k[len(blobPrefix):]))
		if err != nil {
			return fmt.Errorf("store: corrupt blob key %q: %w", k, err)
		}
		info, _, err := decodeBlobMeta(c, v)
		if err != nil {
			return err
		}
		return fn(info)
	})
}

// Verify re-hashes a stored blob; a blob whose bytes no longer match its CID
// is deleted and reported with *DigestMismatchError.
func (s *Store) Verify(ctx context.Context, c cid.Cid) error {
	b, err := s.Open(ctx, c)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(h, &ctxReader{ctx: ctx, r: b})
	_ = b.Close()
	if err != nil {
		return fmt.Errorf("store: verify %s: %w", c, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, b.Info.SHA256) {
		_ = s.Delete(ctx, c)
		return &DigestMismatchError{Want: hex.EncodeToString(b.Info.SHA256), Got: hex.EncodeToString(got)}
	}
	return nil
}

// recover removes interrupted writes and indexes verified files that lost
// their index record to a crash between rename and index write.
func (s *Store) recover(ctx context.Context) error {
	tmps, err := s.fs.List(s.path("tmp"))
	if err != nil {
		return fmt.Errorf("store: list tmp: %w", err)
	}
	for _, t := range tmps {
		_ = s.fs.RemoveAll(s.path("tmp", t))
	}
	shards, err := s.fs.List(s.path("blobs"))
	if err != nil {
		return fmt.Errorf("store: list blobs: %w", err)
	}
	for _, sh := range shards {
		names, err := s.fs.List(s.path("blobs", sh))
		if err != nil {
			continue
		}
		for _, name := range names {
			c, err := cid.Decode(name)
			if err != nil || strings.HasSuffix(name, ".tmp") {
				s.log.Warn("removing stray file in blob directory", "name", name)
				_ = s.fs.Remove(s.path("blobs", sh, name))
				continue
			}
			if s.Has(ctx, c) {
				continue
			}
			if err := s.reindexFile(ctx, c); err != nil {
				s.log.Warn("removing unverifiable blob file", "cid", name, "err", err)
				_ = s.fs.Remove(s.blobPath(c))
			}
		}
	}
	return nil
}

func (s *Store) reindexFile(ctx context.Context, c cid.Cid) error {
	want, err := SHA256Of(c)
	if err != nil {
		return err
	}
	f, err := s.fs.Open(s.blobPath(c))
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if !bytes.Equal(h.Sum(nil), want) {
		return ErrDigestMismatch
	}
	info := BlobInfo{CID: c, Size: n, SHA256: want, Verified: time.Now().UTC().Truncate(time.Second)}
	return s.db.Set(blobKey(c), encodeBlobMeta(info, nil), pebble.Sync)
}

func oserrorNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

// ctxReader stops a long copy once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Scratch is a node-local temporary file (in the store's tmp directory,
// which Open empties, so a crash leaves nothing behind for long).
type Scratch struct {
	f     vfs.File
	w     *bufio.Writer
	dirty bool
	fs    vfs.FS
	path  string
	size  int64
}

// NewScratch creates a scratch file; Close removes it.
func (s *Store) NewScratch() (*Scratch, error) {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	p := s.path("tmp", "scratch-"+hex.EncodeToString(rnd[:]))
	f, err := s.fs.Create(p, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("store: create scratch file: %w", err)
	}
	return &Scratch{f: f, w: bufio.NewWriterSize(f, 1<<20), fs: s.fs, path: p}, nil
}

// Append writes b at the end and returns its offset.
func (sc *Scratch) Append(b []byte) (int64, error) {
	off := sc.size
	n, err := sc.w.Write(b)
	sc.size += int64(n)
	sc.dirty = true
	if err != nil {
		return 0, fmt.Errorf("store: write scratch file: %w", err)
	}
	return off, nil
}

// ReadAt reads len(b) bytes at off.
func (sc *Scratch) ReadAt(b []byte, off int64) (int, error) {
	if sc.dirty {
		if err := sc.w.Flush(); err != nil {
			return 0, fmt.Errorf("store: write scratch file: %w", err)
		}
		sc.dirty = false
	}
	return sc.f.ReadAt(b, off)
}

// Flush writes to the file what Append buffered.
func (sc *Scratch) Flush() error {
	if !sc.dirty {
		return nil
	}
	if err := sc.w.Flush(); err != nil {
		return fmt.Errorf("store: write scratch file: %w", err)
	}
	sc.dirty = false
	return nil
}

// ReadFlushedAt reads len(b) bytes at off from the file as flushed: it
// may run beside Append and Flush on another goroutine, for bytes flushed
// before it began.
func (sc *Scratch) ReadFlushedAt(b []byte, off int64) (int, error) { return sc.f.ReadAt(b, off) }

// Size is the number of bytes appended.
func (sc *Scratch) Size() int64 { return sc.size }

// Close closes and removes the file.
func (sc *Scratch) Close() error {
	err := sc.f.Close()
	if rerr := sc.fs.Remove(sc.path); err == nil {
		err = rerr
	}
	return err
}
