package conda

import (
	"bytes"
	stdbzip2 "compress/bzip2"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dsnet/compress/bzip2"
)

// bz2Compress compresses b with the library writer at level.
func bz2Compress(tb testing.TB, b []byte, level int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w, err := bzip2.NewWriter(&buf, &bzip2.WriterConfig{Level: level})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// mixedPayload is n bytes of alternating random and word-like chunks, as
// in a package: bzip2 blocks of both kinds of content.
func mixedPayload(n int, seed uint64) []byte {
	rnd := rand.New(rand.NewPCG(seed, 9))
	words := strings.Fields("lib bin share include python site packages conda index json version build")
	b := make([]byte, 0, n+64)
	for len(b) < n {
		if rnd.IntN(2) == 0 {
			for range 4096 / 8 {
				b = binary.LittleEndian.AppendUint64(b, rnd.Uint64())
			}
			continue
		}
		for end := len(b) + 4096; len(b) < end; {
			b = append(b, words[rnd.IntN(len(words))]...)
			b = append(b, ' ')
		}
	}
	return b[:n]
}

var (
	bz2SamplesOnce sync.Once
	bz2Multi       []byte // several level-1 blocks
	bz2Zeros       []byte // one block decoding to more than maxBz2BlockOut
)

func bz2Samples(tb testing.TB) {
	bz2SamplesOnce.Do(func() {
		bz2Multi = bz2Compress(tb, mixedPayload(420<<10, 1), 1)
		bz2Zeros = bz2Compress(tb, make([]byte, maxBz2BlockOut+(1<<20)), 9)
	})
}

// bz2Text is three small level-1 blocks, seeds of the fuzzer.
func bz2Text(tb testing.TB) []byte {
	text := make([]byte, 0, 210<<10)
	rnd := rand.New(rand.NewPCG(4, 4))
	for len(text) < 210<<10 {
		text = append(text, "ab"[rnd.IntN(2)])
	}
	return bz2Compress(tb, text, 1)
}

// decodeAll reads r to its end, at most limit bytes.
func decodeAll(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit))
	return b, err
}

// decodeBoth decodes b with the sequential library reader and with
// parallelBzip2 and fails the test unless both give the same bytes, or
// both an error. It reports whether the parallel path fell back.
func decodeBoth(t *testing.T, b []byte, workers, chunk int, extra []int64, limit int64) (out []byte, err error, fellBack bool) {
	t.Helper()
	want, werr := decodeAll(sequentialBzip2(bytes.NewReader(b), int64(len(b))), limit)
	p := newParallelBzip2(bytes.NewReader(b), int64(len(b)), workers, chunk, extra)
	got, gerr := decodeAll(p, limit)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("sequential error %v, parallel error %v", werr, gerr)
	}
	if werr == nil && !bytes.Equal(got, want) {
		t.Fatalf("parallel decoded %d bytes, sequential %d, not the same", len(got), len(want))
	}
	return got, gerr, p.seq != nil
}

// TestParallelBzip2: the parallel decoder gives the sequential reader's
// bytes or error for valid, concatenated, corrupt and truncated streams
// and for magics found inside compressed data, and stays parallel for
// valid streams.
func TestParallelBzip2(t *testing.T) {
	bz2Samples(t)
	flip := func(b []byte, at int) []byte {
		b = bytes.Clone(b)
		b[at] ^= 0x10
		return b
	}
	empty := bz2Compress(t, nil, 9)
	other := bz2Compress(t, mixedPayload(150<<10, 2), 1)
	cases := []struct {
		name     string
		data     []byte
		chunk    int
		extra    []int64
		wantErr  bool
		parallel bool // no fallback to the sequential reader
	}{
		{name: "several blocks", data: bz2Multi, chunk: bz2ScanChunk, parallel: true},
		{name: "several blocks, 7-byte scan chunks", data: bz2Multi, chunk: 7, parallel: true},
		{name: "block decoding to more than the kept output", data: bz2Zeros, chunk: bz2ScanChunk, parallel: true},
		{name: "empty stream", data: empty, chunk: bz2ScanChunk, parallel: true},
		{name: "two streams of one level", data: append(bytes.Clone(bz2Multi), other...), chunk: 4096, parallel: true},
		{name: "streams of two levels", data: append(bytes.Clone(bz2Multi), bz2Compress(t, []byte("x"), 9)...), chunk: 4096},
		{name: "magic by chance inside the first block", data: bz2Multi, chunk: 4096, extra: []int64{32 + 5000}},
		{name: "magic by chance inside a later block", data: bz2Multi, chunk: 4096, extra: []int64{int64(len(bz2Multi))*8 - 3000}},
		{name: "bit flipped in the last block", data: flip(bz2Multi, len(bz2Multi)-2000), chunk: 4096, wantErr: true},
		{name: "bit flipped in the first block", data: flip(bz2Multi, 2000), chunk: 4096, wantErr: true},
		{name: "end CRC flipped", data: flip(bz2Multi, len(bz2Multi)-3), chunk: 4096, wantErr: true},
		{name: "truncated at 60%", data: bz2Multi[:len(bz2Multi)*6/10], chunk: 4096, wantErr: true},
		{name: "truncated in the end marker", data: bz2Multi[:len(bz2Multi)-4], chunk: 4096, wantErr: true},
		{name: "garbage after the stream", data: append(bytes.Clone(bz2Multi), "garbage"...), chunk: 4096, wantErr: true},
		{name: "header of a stream after the stream", data: append(bytes.Clone(bz2Multi), "BZh1"...), chunk: 4096, wantErr: true},
		{name: "not bzip2", data: []byte("plain text, no bzip2 here"), chunk: 4096, wantErr: true},
		{name: "header only", data: []byte("BZh9"), chunk: 4096, wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err, fellBack := decodeBoth(t, c.data, 2, c.chunk, c.extra, 64<<20)
			if (err != nil) != c.wantErr {
				t.Fatalf("error %v, want error: %v", err, c.wantErr)
			}
			if c.parallel && fellBack {
				t.Fatal("fell back to the sequential reader")
			}
		})
	}
}

// TestParallelBzip2CloseEarly: Close stops the goroutines of a reader
// that was read only in part (ReadPackage's case), and the reader is not
// used after.
func TestParallelBzip2CloseEarly(t *testing.T) {
	bz2Samples(t)
	for _, read := range []int{0, 1, 200 << 10} {
		p := newParallelBzip2(bytes.NewReader(bz2Multi), int64(len(bz2Multi)), 2, 4096, nil)
		if _, err := io.ReadFull(p, make([]byte, read)); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBzip2WorkersSwitch: one worker is the library's sequential reader,
// the parallel decoder's off switch (VerifyOptions.Bzip2Workers).
func TestBzip2WorkersSwitch(t *testing.T) {
	bz2Samples(t)
	for _, c := range []struct {
		workers  int
		parallel bool
	}{{1, false}, {2, true}, {4, true}} {
		r := newBzip2Reader(bytes.NewReader(bz2Multi), int64(len(bz2Multi)), c.workers)
		if _, err := io.Copy(io.Discard, r); err != nil {
			t.Fatal(err)
		}
		r.Close()
		if _, ok := r.(*parallelBzip2); ok != c.parallel {
			t.Fatalf("%d workers: parallel decoder %v, want %v", c.workers, ok, c.parallel)
		}
	}
}

// TestBz2EndMagicNoSelfOverlap is what makes a segment decode only when
// it is one whole block: the end-of-stream magic appended after it does
// not overlap itself, so a block that ran 1 to 7 bits into it cannot be
// followed by an end magic within the bits that are left.
func TestBz2EndMagicNoSelfOverlap(t *testing.T) {
	for k := uint(1); k < 8; k++ {
		if bz2EndMagic&(1<<(48-k)-1) == bz2EndMagic>>k {
			t.Fatalf("end magic overlaps itself shifted by %d bits", k)
		}
	}
}

// TestBzip2AgreesWithLibbzip2: inputs on which the standard library's
// reader and libbzip2 disagree; .tar.bz2 packages are decoded as libbzip2
// (`bzip2 -t`, what conda clients use) decodes them.
func TestBzip2AgreesWithLibbzip2(t *testing.T) {
	cases := []struct {
		file string
		ok   bool // libbzip2 accepts it
	}{
		{"stdlib-refuses.bz2", true},
		{"stdlib-accepts.bz2", false},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			path := filepath.Join("testdata", "bzip2", c.file)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := exec.Command("bzip2", "-t", path).Run(); (err == nil) != c.ok {
				t.Fatalf("bzip2 -t: %v, want ok: %v", err, c.ok)
			}
			_, stdErr := io.ReadAll(stdbzip2.NewReader(bytes.NewReader(b)))
			if (stdErr == nil) == c.ok {
				t.Fatalf("compress/bzip2 agrees with libbzip2 now (%v): pick another input", stdErr)
			}
			for _, workers := range []int{1, 2} {
				r := newBzip2Reader(bytes.NewReader(b), int64(len(b)), workers)
				_, err := io.ReadAll(r)
				r.Close()
				if (err == nil) != c.ok {
					t.Fatalf("workers %d: %v, want ok: %v", workers, err, c.ok)
				}
			}
		})
	}
}

// FuzzBzip2Parallel holds parallelBzip2 to the sequential library reader:
// the same bytes, or an error from both, for any input, any scan chunk
// size and a magic "found by chance" at any bit offset. Where the
// standard library's reader also succeeds, its bytes are the same too.
func FuzzBzip2Parallel(f *testing.F) {
	text := bz2Text(f)
	f.Add(text, uint16(4096), uint32(0))
	f.Add(text[:len(text)/2], uint16(7), uint32(0))
	f.Add(text, uint16(100), uint32(40000))
	f.Add(bz2Compress(f, nil, 9), uint16(3), uint32(0))
	f.Add(bz2Compress(f, []byte("hello hello hello"), 9), uint16(3), uint32(0))
	f.Add(append(bz2Compress(f, []byte("a"), 2), bz2Compress(f, []byte("b"), 2)...), uint16(5), uint32(0))
	f.Add([]byte("BZh9"), uint16(1), uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint16, extraBit uint32) {
		var extra []int64
		if extraBit != 0 && len(b) > 0 {
			extra = []int64{int64(extraBit) % (int64(len(b)) * 8)}
		}
		got, err, _ := decodeBoth(t, b, 2, 1+int(chunk), extra, 4<<20) // past 4 MiB unchecked, for speed
		if err != nil {
			return
		}
		std, stdErr := decodeAll(stdbzip2.NewReader(bytes.NewReader(b)), int64(len(got)))
		if stdErr == nil && !bytes.Equal(std, got) {
			t.Fatalf("compress/bzip2 decoded other bytes")
		}
	})
}
