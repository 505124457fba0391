package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRateBodyLeavesConnectionAfterEOF: once a paced body has ended, a
// handler that reads it again (as decoders do, to see EOF twice) arms no
// deadline: the request is not cancelled by a read deadline firing on
// net/http's background read of the connection after the body.
func TestRateBodyLeavesConnectionAfterEOF(t *testing.T) {
	s := &Server{cfg: Config{BodyMinRate: 1 << 10, BodyGrace: 50 * time.Millisecond}}
	result := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.paceBody(w, r)
		if _, err := io.ReadAll(r.Body); err != nil {
			result <- err
			return
		}
		_, _ = r.Body.Read(make([]byte, 1)) // EOF again
		select {
		case <-r.Context().Done():
			result <- r.Context().Err()
		case <-time.After(500 * time.Millisecond): // ten times the grace
			result <- nil
		}
	}))
	defer srv.Close()
	resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{"a": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-result; err != nil {
		t.Fatalf("the request was cancelled after its body ended: %v", err)
	}
}
