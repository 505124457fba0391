package upstream_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condamesh/condamesh/upstream"
)

func TestRedact(t *testing.T) {
	cases := map[string]string{
		"https://host/t/SECRET/conda-forge/noarch/repodata.json": "https://host/t/***/conda-forge/noarch/repodata.json",
		"https://user:pass@host/c":                               "https://***@host/c",
		"https://host/c/x?sig=SECRET":                            "https://host/c/x?***",
	}
	for in, want := range cases {
		if got := upstream.Redact(in); got != want || strings.Contains(got, "SECRET") || strings.Contains(got, "pass") {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestGet covers success, conditional requests, retries of 5xx, 404,
// refusal, connection refused, and that credentials are sent but never end
// up in errors or logs.
func TestGet(t *testing.T) {
	var calls atomic.Int64
	var failFirst atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		switch r.URL.Path {
		case "/t/SECRET/ok":
			if r.Header.Get("Authorization") != "Bearer TOKEN" {
				http.Error(w, "no auth", 401)
				return
			}
			if r.Header.Get("If-None-Match") == `"v1"` {
				w.WriteHeader(304)
				return
			}
			if failFirst.Add(-1) >= 0 {
				http.Error(w, "flaky", 503)
				return
			}
			w.Header().Set("ETag", `"v1"`)
			_, _ = w.Write([]byte("hello"))
		case "/t/SECRET/forbidden":
			http.Error(w, "no", 403)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	var logs bytes.Buffer
	c := upstream.New(upstream.Config{Retries: 3, Backoff: time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ctx := context.Background()
	base := srv.URL + "/t/SECRET/"

	failFirst.Store(2)
	resp, err := c.Get(ctx, upstream.Request{URL: base + "ok", Authorization: "Bearer TOKEN"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello" || resp.ETag != `"v1"` || calls.Load() != 3 {
		t.Fatalf("body %q etag %q after %d calls", body, resp.ETag, calls.Load())
	}
	resp, err = c.Get(ctx, upstream.Request{URL: base + "ok", Authorization: "Bearer TOKEN", IfNoneMatch: `"v1"`})
	if err != nil || !resp.NotModified {
		t.Fatalf("conditional: %v %+v", err, resp)
	}
	for path, want := range map[string]error{"missing": upstream.ErrNotFound, "forbidden": upstream.ErrRefused} {
		before := calls.Load()
		_, err := c.Get(ctx, upstream.Request{URL: base + path})
		if !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", path, err, want)
		}
		if calls.Load()-before != 1 {
			t.Fatalf("%s was retried (%d calls)", path, calls.Load()-before)
		}
		if strings.Contains(err.Error(), "SECRET") {
			t.Fatalf("error leaks the token: %v", err)
		}
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String() + "/t/SECRET/x"
	l.Close()
	if _, err := c.Get(ctx, upstream.Request{URL: dead}); !errors.Is(err, upstream.ErrUnavailable) || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("refused connection: %v", err)
	}
	if strings.Contains(logs.String(), "SECRET") || strings.Contains(logs.String(), "TOKEN") {
		t.Fatalf("logs leak credentials:\n%s", logs.String())
	}
}

func TestRedactLeavesPlainURLs(t *testing.T) {
	for _, u := range []string{"https://conda.anaconda.org/btel/linux-64/nrnpython-0.1-0.tar.bz2", "http://127.0.0.1:8080/chan/noarch/x-1-0.conda"} {
		if got := upstream.Redact(u); got != u {
			t.Errorf("Redact(%q) = %q: a URL without credentials must stay as it is", u, got)
		}
	}
}
