package node_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node/nodetest"
)

// BenchmarkServeIndex measures the in-process cost of serving an index file
// (200 and 304) through the whole handler stack on a real node; profile it
// with -cpuprofile. The wrk comparison with nginx is in e2e.
func BenchmarkServeIndex(b *testing.B) {
	n := nodetest.Start(b)
	hc := &http.Client{}
	do := func(method, path string, body io.Reader, hdr ...string) *http.Response {
		req, _ := http.NewRequest(method, n.URL()+path, body)
		req.Header.Set("X-API-Key", nodetest.AdminKey)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	do("POST", "/api/channels", strings.NewReader(`{"name":"b","private":false}`))
	for i := range 50 {
		spec := condatest.Spec{Name: fmt.Sprintf("p%d", i), Version: "1", Build: "0", Subdir: "linux-64"}
		data := condatest.Conda(b, spec)
		r := do("POST", "/api/channels/b/upload/"+condatest.Filename(spec, ".conda")+"?sha256="+sha(data), strings.NewReader(string(data)))
		if r.StatusCode != 201 {
			b.Fatalf("upload %d", r.StatusCode)
		}
	}
	etag := do("GET", "/get/b/linux-64/repodata.json.zst", nil).Header.Get("ETag")
	b.Run("200", func(b *testing.B) {
		for range b.N {
			if r := do("GET", "/get/b/linux-64/repodata.json.zst", nil); r.StatusCode != 200 {
				b.Fatal(r.Status)
			}
		}
	})
	// The handler alone, as an anonymous client (conda) revalidates: what
	// the node adds to the HTTP layer's cost.
	b.Run("304-handler-only", func(b *testing.B) {
		req := httptest.NewRequest("GET", "/get/b/linux-64/repodata.json.zst", nil)
		req.Header.Set("If-None-Match", etag)
		h := n.Handler()
		b.ReportAllocs()
		for range b.N {
			w := &headerOnly{h: http.Header{}}
			h.ServeHTTP(w, req)
			if w.status != 304 {
				b.Fatal(w.status)
			}
		}
	})
	b.Run("304", func(b *testing.B) {
		for range b.N {
			if r := do("GET", "/get/b/linux-64/repodata.json.zst", nil, "If-None-Match", etag); r.StatusCode != 304 {
				b.Fatal(r.Status)
			}
		}
	})
}

// headerOnly is a ResponseWriter that keeps the status only.
type headerOnly struct {
	h      http.Header
	status int
}

func (w *headerOnly) Header() http.Header { return w.h }
func (w *headerOnly) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *headerOnly) Write(p []byte) (int, error) {
	w.WriteHeader(200)
	return len(p), nil
}
