// Package storetest is the conformance suite every store configuration must
// pass (on disk, on Pebble's in-memory filesystem, with any inline threshold).
package storetest

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/condamesh/condamesh/store"
)

// Opener opens the store under test. Calling it again after Close must reopen
// the same data (same directory and filesystem).
type Opener func(t *testing.T) *store.Store

// Run runs the conformance suite. threshold is the store's inline threshold,
// so the suite can exercise blobs on both sides of it.
func Run(t *testing.T, threshold int64, open Opener) {
	ctx := context.Background()
	sizes := []int{0, 1, 700, int(threshold), int(threshold) + 1, 3 << 20}

	t.Run("PutOpenRoundTrip", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		for _, n := range sizes {
			data := randBytes(n)
			info, err := s.Put(ctx, bytes.NewReader(data), store.PutOptions{})
			if err != nil {
				t.Fatalf("put %d bytes: %v", n, err)
			}
			sum := sha256.Sum256(data)
			want, _ := store.CIDFromSHA256(sum[:])
			if !info.CID.Equals(want) || info.Size != int64(n) {
				t.Fatalf("put %d: got %s/%d, want %s/%d", n, info.CID, info.Size, want, n)
			}
			if wantInline := int64(n) <= threshold; info.Inline != wantInline {
				t.Fatalf("put %d: inline=%v, want %v", n, info.Inline, wantInline)
			}
			got, err := s.ReadAll(ctx, info.CID)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes: err=%v equal=%v", n, err, bytes.Equal(got, data))
			}
			b, err := s.Open(ctx, info.CID)
			if err != nil {
				t.Fatal(err)
			}
			if n > 10 {
				buf := make([]byte, 5)
				if _, err := b.ReadAt(buf, 5); err != nil || !bytes.Equal(buf, data[5:10]) {
					t.Fatalf("ReadAt: %v", err)
				}
				if _, err := b.Content().Seek(int64(n-3), io.SeekStart); err != nil {
					t.Fatal(err)
				}
				tail, _ := io.ReadAll(b.Content())
				if !bytes.Equal(tail, data[n-3:]) {
					t.Fatalf("seek+read tail mismatch")
				}
			}
			_ = b.Close()
		}
	})

	t.Run("ExpectedDigestAndTee", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		for _, n := range sizes {
			data := randBytes(n)
			sum := sha256.Sum256(data)
			h := md5.New()
			info, err := s.Put(ctx, bytes.NewReader(data), store.PutOptions{WantSHA256: sum[:], WantSize: int64(n), WantSizeSet: true, Tee: h})
			if err != nil {
				t.Fatalf("put with right digest: %v", err)
			}
			if m := md5.Sum(data); !bytes.Equal(h.Sum(nil), m[:]) {
				t.Fatalf("tee saw different bytes")
			}
			if !s.Has(ctx, info.CID) {
				t.Fatal("blob not visible")
			}
		}
	})

	t.Run("MismatchStoresNothing", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		for _, n := range sizes {
			data := randBytes(n)
			wrong := sha256.Sum256([]byte("something else"))
			_, err := s.Put(ctx, bytes.NewReader(data), store.PutOptions{WantSHA256: wrong[:]})
			var dm *store.DigestMismatchError
			if !errors.Is(err, store.ErrDigestMismatch) || !errors.As(err, &dm) {
				t.Fatalf("put %d with wrong digest: err=%v", n, err)
			}
			for _, want := range []int64{int64(n) + 1, int64(n) - 1} {
				if want < 0 {
					continue
				}
				_, err = s.Put(ctx, bytes.NewReader(data), store.PutOptions{WantSize: want, WantSizeSet: true, Absent: true})
				if !errors.Is(err, store.ErrSizeMismatch) {
					t.Fatalf("put %d bytes said to be %d: err=%v", n, want, err)
				}
			}
			if n > 1 {
				_, err = s.Put(ctx, bytes.NewReader(data), store.PutOptions{MaxSize: int64(n) - 1})
				if !errors.Is(err, store.ErrTooLarge) {
					t.Fatalf("put %d over MaxSize: err=%v", n, err)
				}
			}
		}
		if c := count(t, s); c != 0 {
			t.Fatalf("%d blobs visible after failed puts", c)
		}
	})

	t.Run("AbsentPutsOfStoredBytes", func(t *testing.T) {
		// Absent only spares a lookup: putting stored bytes again with it
		// keeps one blob with those bytes, and blobs put one after another
		// (through recycled buffers) keep their own bytes.
		s := open(t)
		defer s.Close()
		var all [][]byte
		for _, n := range sizes {
			data := randBytes(n)
			all = append(all, data)
			for range 2 {
				sum := sha256.Sum256(data)
				info, err := s.Put(ctx, bytes.NewReader(data), store.PutOptions{WantSHA256: sum[:], WantSize: int64(n), WantSizeSet: true, Absent: true, Deferred: true})
				if err != nil || info.Size != int64(n) {
					t.Fatalf("put %d: %+v %v", n, info, err)
				}
			}
		}
		if c := count(t, s); c != len(sizes) {
			t.Fatalf("%d blobs after putting %d twice each", c, len(sizes))
		}
		for _, data := range all {
			sum := sha256.Sum256(data)
			c, _ := store.CIDFromSHA256(sum[:])
			b, err := s.Open(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(b.Content())
			_ = b.Close()
			if !bytes.Equal(got, data) {
				t.Fatalf("blob of %d bytes reads back different bytes", len(data))
			}
		}
	})

	// Check sees the whole bytes before the blob is visible; its error
	// stores nothing and comes back as it is, for new and stored bytes.
	t.Run("CheckBeforeVisible", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		errRefused := errors.New("refused by the caller")
		for _, n := range []int{10, int(threshold) + 10, 1 << 20} {
			data := randBytes(n)
			sawWhole := func(r io.ReaderAt, size int64) bool {
				got := make([]byte, size)
				_, err := r.ReadAt(got, 0)
				return (err == nil || errors.Is(err, io.EOF)) && bytes.Equal(got, data)
			}
			_, err := s.Put(ctx, bytes.NewReader(data), store.PutOptions{Check: func(r io.ReaderAt, size int64) error {
				if !sawWhole(r, size) {
					t.Errorf("%d bytes: check did not see the whole bytes", n)
				}
				return errRefused
			}})
			if !errors.Is(err, errRefused) {
				t.Fatalf("%d bytes: err = %v, want the check's", n, err)
			}
			if c := count(t, s); c != 0 {
				t.Fatalf("%d bytes: %d blobs after a refused check", n, c)
			}
			info, err := s.Put(ctx, bytes.NewReader(data), store.PutOptions{Check: func(r io.ReaderAt, size int64) error { return nil }})
			if err != nil || info.Existed {
				t.Fatalf("%d bytes: put with a passing check: %+v %v", n, info, err)
			}
			if _, err := s.Put(ctx, bytes.NewReader(data), store.PutOptions{Check: func(io.ReaderAt, int64) error { return errRefused }}); !errors.Is(err, errRefused) {
				t.Fatalf("%d bytes: stored bytes: err = %v, want the check's", n, err)
			}
			if err := s.Delete(ctx, info.CID); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("ReaderErrorStoresNothing", func(t *testing.T) {
		// A body that breaks off (a truncated HTTP response reports
		// io.ErrUnexpectedEOF) is an error, not the end of the blob.
		s := open(t)
		defer s.Close()
		for _, n := range sizes {
			r := io.MultiReader(bytes.NewReader(randBytes(n)), iotest.ErrReader(io.ErrUnexpectedEOF))
			if _, err := s.Put(ctx, r, store.PutOptions{Absent: true}); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("put of %d bytes then a read error: err=%v", n, err)
			}
		}
		if c := count(t, s); c != 0 {
			t.Fatalf("%d blobs visible after broken bodies", c)
		}
	})

	t.Run("CancelledPutStoresNothing", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		cctx, cancel := context.WithCancel(ctx)
		r := &cancelAfter{r: bytes.NewReader(randBytes(4 << 20)), n: 2 << 20, cancel: cancel}
		if _, err := s.Put(cctx, r, store.PutOptions{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled put: err=%v", err)
		}
		if c := count(t, s); c != 0 {
			t.Fatalf("%d blobs visible after cancelled put", c)
		}
	})

	// Of concurrent Puts of the same new bytes exactly one reports them as
	// new: a caller that trusted Existed to decide that a blob was its own
	// (and deleted it on failure) lost another caller's blob.
	t.Run("ConcurrentSameBlob", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		for _, n := range []int{int(threshold), int(threshold) + 100, 1 << 20} {
			for round := range 5 {
				data := randBytes(n + round)
				var wg sync.WaitGroup
				infos := make([]store.BlobInfo, 8)
				errs := make([]error, 8)
				start := make(chan struct{})
				for i := range infos {
					wg.Go(func() {
						<-start
						infos[i], errs[i] = s.Put(ctx, bytes.NewReader(data), store.PutOptions{})
					})
				}
				close(start)
				wg.Wait()
				fresh := 0
				for i, err := range errs {
					if err != nil {
						t.Fatal(err)
					}
					if !infos[i].Existed {
						fresh++
					}
				}
				if fresh != 1 {
					t.Fatalf("%d bytes: %d of 8 concurrent puts reported a new blob, want 1", n+round, fresh)
				}
				if got, err := s.ReadAll(ctx, infos[0].CID); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("%d bytes: read back: %v", n+round, err)
				}
			}
		}
	})

	// DeleteIfStale removes a blob only if no Put wrote or re-verified it
	// since the cutoff.
	t.Run("DeleteIfStale", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		for _, n := range []int{10, int(threshold) + 10} {
			data := randBytes(n)
			info, err := s.Put(ctx, bytes.NewReader(data), store.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if deleted, err := s.DeleteIfStale(ctx, info.CID, info.Verified); err != nil || deleted {
				t.Fatalf("%d bytes: cutoff at its write: deleted=%v err=%v, want kept", n, deleted, err)
			}
			if deleted, err := s.DeleteIfStale(ctx, info.CID, info.Verified.Add(time.Second)); err != nil || !deleted {
				t.Fatalf("%d bytes: cutoff after its write: deleted=%v err=%v, want deleted", n, deleted, err)
			}
			if _, err := s.DeleteIfStale(ctx, info.CID, time.Now()); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("%d bytes: delete twice: %v", n, err)
			}
		}
	})

	t.Run("DeleteAndList", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		a, _ := s.Put(ctx, bytes.NewReader(randBytes(10)), store.PutOptions{})
		b, _ := s.Put(ctx, bytes.NewReader(randBytes(int(threshold)+10)), store.PutOptions{})
		if c := count(t, s); c != 2 {
			t.Fatalf("listed %d, want 2", c)
		}
		for _, c := range []store.BlobInfo{a, b} {
			if err := s.Delete(ctx, c.CID); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Open(ctx, c.CID); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("open deleted: %v", err)
			}
		}
		if err := s.Delete(ctx, a.CID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
	})

	t.Run("ReopenKeepsEverything", func(t *testing.T) {
		s := open(t)
		var cids []store.BlobInfo
		for _, n := range sizes {
			info, err := s.Put(ctx, bytes.NewReader(randBytes(n)), store.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cids = append(cids, info)
		}
		b := s.NewBatch()
		_ = b.Set([]byte("m/k"), []byte("v"))
		if err := s.ApplyBatch(ctx, 7, b); err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		s = open(t)
		defer s.Close()
		for _, c := range cids {
			if err := s.Verify(ctx, c.CID); err != nil {
				t.Fatalf("verify %s after reopen: %v", c.CID, err)
			}
		}
		if idx, _ := s.AppliedIndex(ctx); idx != 7 {
			t.Fatalf("applied index %d, want 7", idx)
		}
	})

	t.Run("ApplyBatchIdempotent", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		apply := func(idx uint64, v string) {
			b := s.NewBatch()
			if err := b.Set([]byte("m/x"), []byte(v)); err != nil {
				t.Fatal(err)
			}
			if err := s.ApplyBatch(ctx, idx, b); err != nil {
				t.Fatal(err)
			}
		}
		apply(100, "a")
		apply(100, "b") // replay of an applied index: ignored
		apply(99, "c")
		if v, _ := s.Get(ctx, []byte("m/x")); string(v) != "a" {
			t.Fatalf("got %q after replays, want a", v)
		}
		apply(101, "d")
		if v, _ := s.Get(ctx, []byte("m/x")); string(v) != "d" {
			t.Fatalf("got %q, want d", v)
		}
		b := s.NewBatch()
		if err := b.Set([]byte("l/x"), nil); !errors.Is(err, store.ErrBadKey) {
			t.Fatalf("batch accepted a non-replicated key: %v", err)
		}
		b.Close()
	})

	t.Run("SnapshotRestore", func(t *testing.T) {
		src := open(t)
		b := src.NewBatch()
		for i := range 500 {
			_ = b.Set([]byte("m/k/"+string(rune('a'+i%26))+string(rune('0'+i%10))+"/"+itoa(i)), randBytes(i))
		}
		if err := src.ApplyBatch(ctx, 42, b); err != nil {
			t.Fatal(err)
		}
		_ = src.WriteLocal(ctx, []store.LocalWrite{{Key: []byte("l/local"), Value: []byte("not replicated")}})
		snap, err := src.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := snap.WriteTo(ctx, &buf); err != nil {
			t.Fatal(err)
		}
		snap.Close()
		want := dump(t, src)
		_ = src.Close()

		// Restore into a store holding unrelated replicated state: it must be replaced.
		dst := open(t)
		defer dst.Close()
		b = dst.NewBatch()
		_ = b.Set([]byte("m/stale"), []byte("x"))
		_ = dst.ApplyBatch(ctx, 3, b)
		if err := dst.Restore(ctx, bytes.NewReader(buf.Bytes())); err != nil {
			t.Fatal(err)
		}
		if got := dump(t, dst); !bytes.Equal(got, want) {
			t.Fatalf("restored keyspace differs (%d vs %d bytes)", len(got), len(want))
		}
		if idx, _ := dst.AppliedIndex(ctx); idx != 42 {
			t.Fatalf("applied %d, want 42", idx)
		}
		// Corrupt or truncated snapshots change nothing.
		bad := bytes.Clone(buf.Bytes())
		bad[len(bad)/2] ^= 0xff
		for name, data := range map[string][]byte{"flipped": bad, "truncated": buf.Bytes()[:buf.Len()/2], "empty": nil} {
			if err := dst.Restore(ctx, bytes.NewReader(data)); !errors.Is(err, store.ErrBadSnapshot) {
				t.Fatalf("%s snapshot: err=%v", name, err)
			}
			if got := dump(t, dst); !bytes.Equal(got, want) {
				t.Fatalf("%s snapshot changed the keyspace", name)
			}
		}
	})
}

func dump(t *testing.T, s *store.Store) []byte {
	var out bytes.Buffer
	err := s.Scan(context.Background(), []byte(store.ReplicatedPrefix), func(k, v []byte) error {
		out.Write(k)
		out.WriteByte(0)
		out.Write(v)
		out.WriteByte(0)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func count(t *testing.T, s *store.Store) int {
	n := 0
	if err := s.List(context.Background(), func(store.BlobInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.IntN(256))
	}
	return b
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

type cancelAfter struct {
	r      io.Reader
	n      int
	read   int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	if c.read >= c.n {
		c.cancel()
	}
	return n, err
}
