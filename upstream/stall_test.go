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

// TestStalledAnswersAreCut: answers whose body the upstream never
// finishes must not hold Get for ever, whatever their status: an error
// answer (the client reads up to 64 KiB of it before it reports the
// status) and a redirect (net/http reads up to 2 KiB of it inside Do,
// before it follows it) need the same silence bound as a 200's body.
func TestStalledAnswersAreCut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := map[string]int{"/503": 503, "/404": 404, "/403": 403, "/redirect": 302}[r.URL.Path]
		if status == 0 {
			_, _ = io.WriteString(w, "ok")
			return
		}
		if status == 302 {
			w.Header().Set("Location", "/to")
		}
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(status)
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
	for _, p := range []string{"/503", "/404", "/403", "/redirect"} {
		done := make(chan error, 1)
		go func() {
			resp, err := c.Get(context.Background(), upstream.Request{URL: srv.URL + p})
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if p != "/redirect" && (err == nil || errors.Is(err, context.Canceled)) {
				t.Fatalf("%s: %v, want an error", p, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: an answer whose body stalls held Get for ever", p)
		}
	}
}
