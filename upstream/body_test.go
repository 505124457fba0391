package upstream_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/upstream"
)

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestGetBoundsBodies: with MaxBytes set, a body is refused once it is
// longer decoded (a gzip bomb: few bytes on the wire, many decoded) or on
// the wire (gzip padded with empty members that decode to nothing), and a
// declared Content-Length beyond it is refused before the body is read.
// A body of exactly MaxBytes, plain or gzip, is read whole.
func TestGetBoundsBodies(t *testing.T) {
	const limit = 64 << 10
	exact := bytes.Repeat([]byte("x"), limit)
	bomb := gzipped(t, make([]byte, 64<<20))
	empty := gzipped(t, nil)
	padded := append(bytes.Repeat(empty, 2*limit/len(empty)+(64<<10)/len(empty)), gzipped(t, []byte("tiny"))...)
	bodies := map[string]struct {
		b  []byte
		gz bool
	}{
		"/exact": {exact, false}, "/exact-gz": {gzipped(t, exact), true},
		"/long": {append(exact, 'y'), false}, "/bomb": {bomb, true}, "/padded": {padded, true},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := bodies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if b.gz {
			if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
				http.Error(w, "gzip only", 406)
				return
			}
			w.Header().Set("Content-Encoding", "gzip")
		}
		if r.URL.Query().Get("chunked") != "" {
			w.(http.Flusher).Flush() // no Content-Length: the limit must hold while reading
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(len(b.b)))
		}
		_, _ = w.Write(b.b)
	}))
	defer srv.Close()
	c := upstream.New(upstream.Config{Retries: 1, Backoff: time.Millisecond})
	cases := []struct {
		path    string
		want    []byte
		getErr  bool // refused by Get (Content-Length), not while reading
		readErr bool
	}{
		{path: "/exact", want: exact},
		{path: "/exact?chunked=1", want: exact},
		{path: "/exact-gz", want: exact},
		{path: "/long", getErr: true},
		{path: "/long?chunked=1", readErr: true},
		{path: "/bomb", readErr: true},
		{path: "/padded", readErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := c.Get(context.Background(), upstream.Request{URL: srv.URL + tc.path, MaxBytes: limit})
			if tc.getErr {
				if !errors.Is(err, upstream.ErrTooLarge) {
					t.Fatalf("Get: %v, want ErrTooLarge", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if len(got) > limit {
				t.Fatalf("read %d decoded bytes, more than the limit %d", len(got), limit)
			}
			if tc.readErr {
				if !errors.Is(err, upstream.ErrTooLarge) {
					t.Fatalf("read: %v after %d bytes, want ErrTooLarge", err, len(got))
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("read %d bytes: %v", len(got), err)
			}
		})
	}
}

// TestJoinEscapesSegments: a decoded channel-relative path is sent as the
// same path, never as a query, fragment or other path.
func TestJoinEscapesSegments(t *testing.T) {
	cases := map[string]string{
		"linux-64/repodata.json":     "https://h/c/linux-64/repodata.json",
		"linux-64/a?b.conda":         "https://h/c/linux-64/a%3Fb.conda",
		"linux-64/%2e%2e%2fsecret":   "https://h/c/linux-64/%252e%252e%252fsecret",
		"noarch/x#y":                 "https://h/c/noarch/x%23y",
		"noarch/pkg-1!2.0-0.tar.bz2": "https://h/c/noarch/pkg-1%212.0-0.tar.bz2",
	}
	for in, want := range cases {
		if got := upstream.Join("https://h/c/", in); got != want {
			t.Errorf("Join(%q) = %q, want %q", in, got, want)
		}
		checkJoin(t, "https://h/c/", in)
	}
}

func checkJoin(t *testing.T, base, p string) {
	t.Helper()
	u, err := url.Parse(upstream.Join(base, p))
	if err != nil {
		t.Fatalf("Join(%q, %q) does not parse: %v", base, p, err)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Path != "/c/"+p {
		t.Fatalf("Join(%q, %q) = %q: path %q, query %q, fragment %q", base, p, upstream.Join(base, p), u.Path, u.RawQuery, u.Fragment)
	}
}

func FuzzJoin(f *testing.F) {
	for _, s := range []string{"linux-64/repodata.json", "a?b", "%2e%2e%2f", "x#y", "a/../b", "\x00\xff", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) { checkJoin(t, "https://h/c", p) })
}
