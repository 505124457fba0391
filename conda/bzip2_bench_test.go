package conda

import (
	"bytes"
	stdbzip2 "compress/bzip2"
	"io"
	"runtime"
	"strconv"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
)

// BenchmarkVerifyTarBz2 compares the bzip2 decoders on one .tar.bz2 of
// 24 MiB unpacked (half random, half word-like text, level 9): the
// standard library's reader, the dsnet reader VerifyPackage uses, the
// parallel decoder, and VerifyPackage itself with one worker (parallel
// decoder off) and with GOMAXPROCS. MB/s are of compressed input.
func BenchmarkVerifyTarBz2(b *testing.B) {
	s := testSpec()
	s.Files = map[string]string{"share/payload.bin": string(mixedPayload(24<<20, 5))}
	data := condatest.TarBz2(b, s)
	fn := condatest.Filename(s, ExtTarBz2)
	size := int64(len(data))
	decode := func(b *testing.B, r io.Reader) {
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("compress-bzip2", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			decode(b, stdbzip2.NewReader(bytes.NewReader(data)))
		}
	})
	b.Run("dsnet", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			decode(b, sequentialBzip2(bytes.NewReader(data), size))
		}
	})
	workers := runtime.GOMAXPROCS(0)
	b.Run("parallel-"+strconv.Itoa(workers), func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			p := newBzip2Reader(bytes.NewReader(data), size, workers)
			decode(b, p)
			p.Close()
		}
	})
	for _, w := range []int{1, workers} {
		b.Run("VerifyPackage-workers-"+strconv.Itoa(w), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				if _, err := verifyPkg(data, fn, VerifyOptions{Bzip2Workers: w}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
