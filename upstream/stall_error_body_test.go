package upstream_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/condamesh/condamesh/upstream"
)

// TestStalledErrorBodyIsCut: an upstream that answers an error status
// (503, 404, 403) with a body it never finishes must not hold Get: the
// client reads up to 64 KiB of such a body before it reports the status,
// and that read needs the same silence bound as a 200's body.
func TestStalledErrorBodyIsCut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		switch r.URL.Path {
		case "/503":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/404":
			w.WriteHeader(http.StatusNotFound)
		default:
			w.WriteHeader(http.StatusForbidden)
		}
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release) // before srv.Close: the handlers return
	c := upstream.New(upstream.Config{AttemptTimeout: 300 * time.Millisecond, Retries: 1, Backoff: time.Millisecond})
	for _, p := range []string{"/503", "/404", "/403"} {
		done := make(chan error, 1)
		go func() {
			_, err := c.Get(context.Background(), upstream.Request{URL: srv.URL + p})
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || errors.Is(err, context.Canceled) {
				t.Fatalf("%s: %v, want an error", p, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: an error answer whose body stalls held Get for ever", p)
		}
	}
}
