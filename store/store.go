package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Key prefixes; see the package documentation for the layout.
const (
	// ReplicatedPrefix starts every key written through ApplyBatch.
	ReplicatedPrefix = "m/"
	// LocalPrefix starts every local, derived key written through SetLocal.
	LocalPrefix   = "l/"
	blobPrefix    = "b/"
	appliedKey    = "s/applied"
	defaultInline = 8 << 10
)

// Config configures Open. The zero value plus Dir is valid.
type Config struct {
	// Dir is the data directory. Required.
	Dir string
	// FS is the filesystem; nil means the operating system's. Tests pass
	// vfs.NewMem() for a hermetic in-memory store.
	FS vfs.FS
	// InlineThreshold is the largest blob kept inside Pebble; larger blobs
	// are files. Default 8 KiB, chosen by BenchmarkServe and BenchmarkPut
	// (docs/BENCHMARKS.md): the read-side crossover lies between 4 and 16 KiB.
	InlineThreshold int64
	// CacheSize is Pebble's block cache. Default 64 MiB: inline blobs and
	// the metadata of a large channel stay in memory, and the process stays
	// well under the memory target.
	CacheSize int64
	// MemTableSize is Pebble's memtable. Default 32 MiB: a mirror sync
	// writes thousands of small blobs and their records in a burst, and
	// Pebble's 4 MiB default flushed and compacted several times during
	// one (BenchmarkMirrorSync: 0.71x -> 0.82x curl), with no change to
	// the server's peak memory there (its Go heap is the peak).
	MemTableSize int64
	// Logger receives the store's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("store: config: Dir is required")
	}
	if c.InlineThreshold < 0 {
		return errors.New("store: config: InlineThreshold must be >= 0")
	}
	if c.CacheSize < 0 {
		return errors.New("store: config: CacheSize must be >= 0")
	}
	if c.MemTableSize < 0 || c.MemTableSize >= 4<<30 {
		return errors.New("store: config: MemTableSize must be >= 0 and below 4 GiB")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.InlineThreshold == 0 {
		c.InlineThreshold = defaultInline
	}
	if c.CacheSize == 0 {
		c.CacheSize = 64 << 20
	}
	if c.MemTableSize == 0 {
		c.MemTableSize = 32 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// hotBlobBytes is the memory given to recently opened inline blobs.
const hotBlobBytes = 32 << 20

// Store is the local persistence of one node. It is safe for concurrent use.
type Store struct {
	cfg    Config
	fs     vfs.FS
	osFS   bool // blob files may be opened with package os (zero-copy serving)
	db     *pebble.DB
	opts   *pebble.Options // with defaults filled: Restore writes tables with them
	log    *slog.Logger
	closed atomic.Bool
	hot    *hotBlobs

	applyMu sync.Mutex // serialises ApplyBatch and Restore
	// blobLocks serialise, per CID stripe, the steps that decide whether a
	// blob exists and change it: a Put's look-up-then-commit and a delete.
	blobLocks [blobLockStripes]sync.Mutex
}

// Open opens (creating if needed) the store in cfg.Dir, removes leftovers of
// interrupted blob writes, and indexes verified blob files whose index record
// was lost in a crash.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	s := &Store{cfg: cfg, fs: cfg.FS, osFS: cfg.FS == vfs.Default, log: cfg.Logger.With("component", "store"), hot: newHotBlobs(hotBlobBytes)}
	for _, d := range []string{cfg.Dir, s.path("blobs"), s.path("tmp")} {
		if err := s.fs.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("store: create %s: %w", d, err)
		}
		// Make the directory's own entry durable: Pebble syncs the files
		// and directories it creates, not their parents.
		if err := syncDir(s.fs, s.fs.PathDir(d)); err != nil {
			return nil, err
		}
	}
	opts := &pebble.Options{FS: s.fs, Logger: pebbleLogger{s.log}, CacheSize: cfg.CacheSize, MemTableSize: uint64(cfg.MemTableSize)}
	// Bloom filters on every level: most lookups of blob keys (CIDs, random
	// by nature) are for keys that are absent ("do we have it yet?"), and
	// without filters each one reads index and data blocks of every
	// overlapping table.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	opts.EnsureDefaults()
	db, err := pebble.Open(s.path("pebble"), opts)
	if err != nil {
		return nil, fmt.Errorf("store: open pebble: %w", err)
	}
	s.db, s.opts = db, opts
	if err := s.recover(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database. Blobs opened before Close stay readable until
// they are closed themselves.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close pebble: %w", err)
	}
	return nil
}

func (s *Store) path(parts ...string) string {
	return s.fs.PathJoin(append([]string{s.cfg.Dir}, parts...)...)
}

// Get returns a copy of the value stored at key, or ErrNotFound.
func (s *Store) Get(ctx context.Context, key []byte) ([]byte, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	v, c, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: get: %w", err)
	}
	out := bytes.Clone(v)
	_ = c.Close()
	return out, nil
}

// Scan calls fn for every key starting with prefix, in key order. The slices
// passed to fn are only valid during the call. Returning a non-nil error from
// fn stops the scan and returns that error.
func (s *Store) Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return scan(ctx, s.db, prefix, fn)
}

type iterable interface {
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

func scan(ctx context.Context, r iterable, prefix []byte, fn func(key, value []byte) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("store: iterate: %w", err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("store: iterate: %w", err)
		}
		if err := fn(it.Key(), v); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("store: iterate: %w", err)
	}
	return nil
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Batch collects replicated writes applied atomically by ApplyBatch.
type Batch struct {
	b *pebble.Batch
	s *Store
}

// NewBatch starts a batch of replicated writes. Reads through the batch see
// its own pending writes (Get), so an FSM can read-modify-write.
func (s *Store) NewBatch() *Batch {
	return &Batch{b: s.db.NewIndexedBatch(), s: s}
}

// Set stages key=value. key must start with ReplicatedPrefix.
func (b *Batch) Set(key, value []byte) error {
	if !bytes.HasPrefix(key, []byte(ReplicatedPrefix)) {
		return fmt.Errorf("%w: %q is not replicated", ErrBadKey, key)
	}
	return b.b.Set(key, value, nil)
}

// Delete stages the removal of key. key must start with ReplicatedPrefix.
func (b *Batch) Delete(key []byte) error {
	if !bytes.HasPrefix(key, []byte(ReplicatedPrefix)) {
		return fmt.Errorf("%w: %q is not replicated", ErrBadKey, key)
	}
	return b.b.Delete(key, nil)
}

// DeletePrefix stages the removal of every key starting with prefix.
func (b *Batch) DeletePrefix(prefix []byte) error {
	if !bytes.HasPrefix(prefix, []byte(ReplicatedPrefix)) {
		return fmt.Errorf("%w: %q is not replicated", ErrBadKey, prefix)
	}
	return b.b.DeleteRange(prefix, prefixEnd(prefix), nil)
}

// Get reads key as the batch would leave it.
func (b *Batch) Get(key []byte) ([]byte, error) {
	v, c, err := b.b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: batch get: %w", err)
	}
	out := bytes.Clone(v)
	_ = c.Close()
	return out, nil
}

// GetMany reads keys as the batch would leave them: out[i] is keys[i]'s
// value, nil where there is none. One iterator seeks the keys in sorted
// order, where a Get per key builds an iterator over every level each
// time: for the 1,000 new records of a mirror sync's batch, GetMany
// costs a fraction of the Gets (store.BenchmarkGetMany).
func (b *Batch) GetMany(keys [][]byte) (out [][]byte, err error) {
	out = make([][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int { return bytes.Compare(keys[i], keys[j]) })
	lo, hi := keys[order[0]], keys[order[len(order)-1]]
	it, err := b.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: append(bytes.Clone(hi), 0)})
	if err != nil {
		return nil, fmt.Errorf("store: batch get: %w", err)
	}
	defer it.Close()
	for _, i := range order {
		if !it.SeekGE(keys[i]) {
			break // past the last key: the rest are absent
		}
		if !bytes.Equal(it.Key(), keys[i]) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("store: batch get: %w", err)
		}
		out[i] = bytes.Clone(v)
		if out[i] == nil {
			out[i] = []byte{}
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("store: batch get: %w", err)
	}
	return out, nil
}

// Scan iterates keys with prefix as the batch would leave them.
func (b *Batch) Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error {
	return scan(ctx, b.b, prefix, fn)
}

// Close discards an uncommitted batch.
func (b *Batch) Close() { _ = b.b.Close() }

// ApplyBatch commits b together with the applied index in one synced write.
// Replaying an index at or below AppliedIndex is a no-op, which makes Raft log
// replay after a restart idempotent. The batch is closed.
func (s *Store) ApplyBatch(ctx context.Context, index uint64, b *Batch) error {
	defer b.Close()
	if s.closed.Load() {
		return ErrClosed
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	cur, err := s.appliedIndex()
	if err != nil {
		return err
	}
	if index != 0 && index <= cur {
		return nil
	}
	if index != 0 {
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], index)
		if err := b.b.Set([]byte(appliedKey), buf[:], nil); err != nil {
			return fmt.Errorf("store: stage applied index: %w", err)
		}
	}
	if err := b.b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("store: commit batch: %w", err)
	}
	return nil
}

// AppliedIndex returns the last index recorded by ApplyBatch or Restore.
func (s *Store) AppliedIndex(ctx context.Context) (uint64, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	return s.appliedIndex()
}

func (s *Store) appliedIndex() (uint64, error) {
	v, c, err := s.db.Get([]byte(appliedKey))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: read applied index: %w", err)
	}
	defer c.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("store: applied index has %d bytes", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug("pebble", "msg", fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error("pebble", "msg", fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error("pebble fatal", "msg", fmt.Sprintf(format, args...))
	panic(fmt.Sprintf(format, args...))
}

// LocalWrite is one write of WriteLocal: Value nil deletes Key.
type LocalWrite struct {
	Key, Value []byte
}

// WriteLocal applies local (non-replicated) writes atomically in one synced
// batch. Every key must start with LocalPrefix.
func (s *Store) WriteLocal(ctx context.Context, writes []LocalWrite) error {
	if s.closed.Load() {
		return ErrClosed
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, w := range writes {
		if !bytes.HasPrefix(w.Key, []byte(LocalPrefix)) {
			return fmt.Errorf("%w: %q is not local", ErrBadKey, w.Key)
		}
		var err error
		if w.Value == nil {
			err = b.Delete(w.Key, nil)
		} else {
			err = b.Set(w.Key, w.Value, nil)
		}
		if err != nil {
			return fmt.Errorf("store: stage local write: %w", err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("store: commit local writes: %w", err)
	}
	return nil
}
