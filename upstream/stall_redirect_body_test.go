package upstream_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/condamesh/condamesh/upstream"
)

// TestStalledRedirectBodyIsCut: net/http reads up to 2 KiB of a
// redirect's body before it follows it, inside the client's Do, where no
// body guard runs. An upstream that redirects with a body it never
// finishes must not hold Get for ever.
func TestStalledRedirectBodyIsCut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/to" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Location", "/to")
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusFound)
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release) // before srv.Close: the handler returns
	c := upstream.New(upstream.Config{AttemptTimeout: 300 * time.Millisecond, Retries: 1, Backoff: time.Millisecond})
	done := make(chan error, 1)
	go func() {
		resp, err := c.Get(context.Background(), upstream.Request{URL: srv.URL + "/from"})
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a redirect whose body stalls held Get for ever")
	}
}
