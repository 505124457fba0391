package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/condamesh/condamesh/store"
	"github.com/ipfs/go-cid"
)

// BenchmarkServe serves one blob over real HTTP (loopback TCP, the client
// reading every byte) from a Pebble value and from a CID-named file. This is
// the measurement behind InlineThreshold: see docs/BENCHMARKS.md.
func BenchmarkServe(b *testing.B) {
	for _, size := range []int{1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 50 << 20} {
		data := make([]byte, size)
		_, _ = rand.Read(data)
		for _, mode := range []string{"pebble-value", "file"} {
			b.Run(fmt.Sprintf("%s/%dKiB", mode, size>>10), func(b *testing.B) {
				threshold := int64(1) // everything is a file
				if mode == "pebble-value" {
					threshold = int64(size)
				}
				s, err := store.Open(context.Background(), store.Config{Dir: b.TempDir(), InlineThreshold: threshold})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				info, err := s.Put(context.Background(), bytes.NewReader(data), store.PutOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if info.Inline != (mode == "pebble-value") {
					b.Fatalf("inline=%v for %s", info.Inline, mode)
				}
				srv := httptest.NewServer(serveBlob(s, info.CID))
				defer srv.Close()
				client := srv.Client()
				b.SetBytes(int64(size))
				b.ResetTimer()
				for range b.N {
					resp, err := client.Get(srv.URL)
					if err != nil {
						b.Fatal(err)
					}
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if n != int64(size) {
						b.Fatalf("read %d bytes", n)
					}
				}
			})
		}
	}
}

func serveBlob(s *store.Store, c cid.Cid) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		blob, err := s.Open(r.Context(), c)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer blob.Close()
		http.ServeContent(w, r, "", time.Time{}, blob.Content())
	})
}

// BenchmarkPut writes distinct blobs as Pebble values and as files: the
// write side of the InlineThreshold trade-off (every Put is durable).
func BenchmarkPut(b *testing.B) {
	for _, size := range []int{1 << 10, 4 << 10, 16 << 10, 64 << 10} {
		for _, mode := range []string{"pebble-value", "file"} {
			b.Run(fmt.Sprintf("%s/%dKiB", mode, size>>10), func(b *testing.B) {
				threshold := int64(1)
				if mode == "pebble-value" {
					threshold = int64(size)
				}
				s, err := store.Open(context.Background(), store.Config{Dir: b.TempDir(), InlineThreshold: threshold})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				data := make([]byte, size)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for i := range b.N {
					data[0], data[1], data[2], data[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
					if _, err := s.Put(context.Background(), bytes.NewReader(data), store.PutOptions{}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
