package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Snapshot stream format (all integers unsigned varints unless noted):
//
//	"condamesh-snapshot-v1\n"
//	applied index (8 bytes, big-endian)
//	repeated: len(key) key len(value) value      (keys start with m/)
//	0                                            (end marker: empty key)
//	sha256 of everything above (32 bytes)
const snapshotMagic = "condamesh-snapshot-v1\n"

// maxSnapshotField bounds a key or value read back from a snapshot stream.
const maxSnapshotField = 64 << 20

// Snapshot is a point-in-time view of the replicated keyspace.
type Snapshot struct {
	snap    *pebble.Snapshot
	applied uint64
}

// Snapshot captures the replicated keyspace and its applied index. It is
// cheap (no I/O); WriteTo does the work. Close must be called.
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	idx, err := s.appliedIndex()
	if err != nil {
		return nil, err
	}
	return &Snapshot{snap: s.db.NewSnapshot(), applied: idx}, nil
}

// AppliedIndex is the applied index the snapshot reflects.
func (sn *Snapshot) AppliedIndex() uint64 { return sn.applied }

// WriteTo streams the snapshot to w.
func (sn *Snapshot) WriteTo(ctx context.Context, w io.Writer) error {
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 256<<10)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return fmt.Errorf("store: write snapshot: %w", err)
	}
	var b8 [8]byte
	binary.BigEndian.PutUint64(b8[:], sn.applied)
	_, _ = bw.Write(b8[:])
	var tmp [binary.MaxVarintLen64]byte
	err := scan(ctx, sn.snap, []byte(ReplicatedPrefix), func(k, v []byte) error {
		_, _ = bw.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(k)))])
		_, _ = bw.Write(k)
		_, _ = bw.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(v)))])
		_, err := bw.Write(v)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: write snapshot: %w", err)
	}
	_ = bw.WriteByte(0)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("store: write snapshot: %w", err)
	}
	if _, err := w.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("store: write snapshot: %w", err)
	}
	return nil
}

// Close releases the snapshot.
func (sn *Snapshot) Close() { _ = sn.snap.Close() }

// restoreChunk bounds the key and value bytes Restore writes into one table
// file before it starts the next, so that a table writer's per-file state (its
// index and filter) stays small whatever the size of the snapshot.
const restoreChunk = 16 << 20

// Restore replaces the whole replicated keyspace (and the applied index) with
// the snapshot read from r.
//
// It streams: records go into table files under tmp/ (at most restoreChunk
// bytes of records each), never into memory, and the trailing sha256 is
// checked before anything changes. The files are then ingested in one atomic
// Pebble step. Each file carries a range deletion over its own slice of the
// m/ keyspace and the last one carries s/applied, so the ingest replaces the
// old keyspace and the applied index together: a reader sees the old state or
// the new one, never a mixture, and a crash at any point leaves the old state
// whole (Open removes the table files of an interrupted restore). A truncated,
// corrupt or cancelled snapshot therefore changes nothing and returns
// ErrBadSnapshot (or the context's error).
func (s *Store) Restore(ctx context.Context, r io.Reader) error {
	if s.closed.Load() {
		return ErrClosed
	}
	rs := &restorer{s: s, wopts: s.opts.MakeWriterOptions(0, s.db.TableFormat())}
	_, _ = rand.Read(rs.id[:])
	defer rs.abort()
	if err := rs.read(ctx, r); err != nil {
		return err
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if err := s.db.Ingest(ctx, rs.paths); err != nil {
		return fmt.Errorf("store: restore: ingest: %w", err)
	}
	rs.paths = nil // Ingest moved them into the database
	return nil
}

// restorer writes one snapshot stream into table files.
type restorer struct {
	s     *Store
	wopts sstable.WriterOptions
	id    [8]byte
	paths []string        // files written so far, removed by abort unless ingested
	w     *sstable.Writer // the file being written, nil between files
	lo    []byte          // first key the current file's range deletion covers
	bytes int             // record bytes in the current file
}

func (rs *restorer) read(ctx context.Context, r io.Reader) error {
	br := bufio.NewReaderSize(r, 256<<10)
	h := sha256.New()
	hr := &hashReader{r: br, h: h}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(hr, magic); err != nil || string(magic) != snapshotMagic {
		return fmt.Errorf("%w: missing header", ErrBadSnapshot)
	}
	var b8 [8]byte
	if _, err := io.ReadFull(hr, b8[:]); err != nil {
		return fmt.Errorf("%w: missing applied index", ErrBadSnapshot)
	}
	m := []byte(ReplicatedPrefix)
	if err := rs.open(m); err != nil {
		return err
	}
	var k, v, prev []byte
	for n := 0; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		var err error
		if k, err = readField(hr, k); err != nil {
			return err
		}
		if len(k) == 0 {
			break
		}
		if !bytes.HasPrefix(k, m) {
			return fmt.Errorf("%w: key %q outside the replicated keyspace", ErrBadSnapshot, k)
		}
		if n > 0 && bytes.Compare(k, prev) <= 0 {
			return fmt.Errorf("%w: key %q out of order", ErrBadSnapshot, k)
		}
		prev = append(prev[:0], k...)
		if v, err = readField(hr, v); err != nil {
			return err
		}
		if rs.bytes >= restoreChunk {
			if err := rs.finish(k); err != nil {
				return err
			}
			if err := rs.open(k); err != nil {
				return err
			}
		}
		if err := rs.w.Set(k, v); err != nil {
			return fmt.Errorf("store: restore: write table: %w", err)
		}
		rs.bytes += len(k) + len(v)
	}
	want := h.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, want) {
		return fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if err := rs.w.Set([]byte(appliedKey), b8[:]); err != nil {
		return fmt.Errorf("store: restore: write table: %w", err)
	}
	return rs.finish(prefixEnd(m))
}

// open starts the next table file, whose range deletion will start at lo.
func (rs *restorer) open(lo []byte) error {
	p := rs.s.path("tmp", fmt.Sprintf("restore-%x-%d.sst", rs.id, len(rs.paths)))
	f, err := rs.s.fs.Create(p, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("store: restore: create table: %w", err)
	}
	rs.paths = append(rs.paths, p)
	rs.w = sstable.NewWriter(objstorageprovider.NewFileWritable(f), rs.wopts)
	rs.lo, rs.bytes = bytes.Clone(lo), 0
	return nil
}

// finish deletes [lo, hi) in the current file (the keys it holds replace
// whatever was there) and syncs and closes it.
func (rs *restorer) finish(hi []byte) error {
	w := rs.w
	rs.w = nil
	if err := w.DeleteRange(rs.lo, bytes.Clone(hi)); err != nil {
		_ = w.Close()
		return fmt.Errorf("store: restore: write table: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("store: restore: write table: %w", err)
	}
	return nil
}

// abort closes and removes whatever was not ingested.
func (rs *restorer) abort() {
	if rs.w != nil {
		_ = rs.w.Close()
	}
	for _, p := range rs.paths {
		_ = rs.s.fs.Remove(p)
	}
}

type hashReader struct {
	r interface {
		io.Reader
		io.ByteReader
	}
	h io.Writer
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	_, _ = h.h.Write(p[:n])
	return n, err
}

func (h *hashReader) ReadByte() (byte, error) {
	c, err := h.r.ReadByte()
	if err == nil {
		_, _ = h.h.Write([]byte{c})
	}
	return c, err
}

// readField reads one length-prefixed field into buf's storage. The buffer
// grows with the bytes that actually arrive, so a corrupt length costs no
// more memory than the stream delivers.
func readField(r *hashReader, buf []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: truncated", ErrBadSnapshot)
	}
	if n > maxSnapshotField {
		return nil, fmt.Errorf("%w: field of %d bytes", ErrBadSnapshot, n)
	}
	buf = buf[:0]
	for uint64(len(buf)) < n {
		step := int(min(n-uint64(len(buf)), 1<<20))
		buf = slices.Grow(buf, step)
		got, err := io.ReadFull(r, buf[len(buf):len(buf)+step])
		buf = buf[:len(buf)+got]
		if err != nil {
			return nil, fmt.Errorf("%w: truncated", ErrBadSnapshot)
		}
	}
	return buf, nil
}
