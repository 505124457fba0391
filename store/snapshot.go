package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2"
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

// Restore replaces the whole replicated keyspace with the snapshot read from
// r, in one synced batch: either all of it is applied or none.
func (s *Store) Restore(ctx context.Context, r io.Reader) error {
	if s.closed.Load() {
		return ErrClosed
	}
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
	b := s.db.NewBatch()
	defer b.Close()
	m := []byte(ReplicatedPrefix)
	_ = b.DeleteRange(m, prefixEnd(m), nil)
	for n := 0; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		k, err := readField(hr)
		if err != nil {
			return err
		}
		if len(k) == 0 {
			break
		}
		if !bytes.HasPrefix(k, m) {
			return fmt.Errorf("%w: key %q outside the replicated keyspace", ErrBadSnapshot, k)
		}
		v, err := readField(hr)
		if err != nil {
			return err
		}
		_ = b.Set(k, v, nil)
	}
	want := h.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, want) {
		return fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	_ = b.Set([]byte(appliedKey), b8[:], nil)
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	return nil
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

func readField(r *hashReader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: truncated", ErrBadSnapshot)
	}
	if n > maxSnapshotField {
		return nil, fmt.Errorf("%w: field of %d bytes", ErrBadSnapshot, n)
	}
	out := make([]byte, n)
	if _, err := io.ReadFull(r, out); err != nil {
		return nil, fmt.Errorf("%w: truncated", ErrBadSnapshot)
	}
	return out, nil
}
