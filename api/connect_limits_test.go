package api_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
	"github.com/condamesh/condamesh/node/nodetest"
)

// gzipZeros is a gzip stream of n zero bytes (about n/1000 on the wire).
func gzipZeros(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, len(zero))
		if _, err := zw.Write(zero[:k]); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestConnectBodyBounds sends oversized and decompression-bomb bodies to a
// real node's Connect handlers: each is refused with resource_exhausted,
// without the node inflating the body (the process allocates far less
// than the bomb's decompressed size).
func TestConnectBodyBounds(t *testing.T) {
	n := nodetest.Start(t)
	url := n.URL() + condameshv1connect.ChannelServiceGetChannelProcedure
	bomb := gzipZeros(t, 256<<20) // 256 MiB of zeros, ~250 KB on the wire
	small := gzipZeros(t, 64<<20) // ~64 KB on the wire, under the anonymous bound
	cases := []struct {
		name     string
		key      string
		body     []byte
		encoding string
	}{
		{"anonymous body above the wire bound", "", bytes.Repeat([]byte{0x0a}, 200<<10), ""},
		{"anonymous gzip bomb", "", small, "gzip"},
		{"owner gzip bomb", nodetest.AdminKey, bomb, "gzip"},
		{"owner body above the read bound", nodetest.AdminKey, bytes.Repeat([]byte{0x0a}, 2<<20), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			req, _ := http.NewRequestWithContext(context.Background(), "POST", url, bytes.NewReader(c.body))
			req.Header.Set("Content-Type", "application/proto")
			if c.encoding != "" {
				req.Header.Set("Content-Encoding", c.encoding)
			}
			if c.key != "" {
				req.Header.Set("X-API-Key", c.key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			runtime.ReadMemStats(&after)
			var e struct{ Code string }
			_ = json.Unmarshal(body, &e)
			if e.Code != "resource_exhausted" {
				t.Fatalf("status %d, body %s: want code resource_exhausted", resp.StatusCode, strings.TrimSpace(string(body)))
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 48<<20 {
				t.Fatalf("the process allocated %d MiB answering a %d-byte body", grew>>20, len(c.body))
			}
		})
	}
}
